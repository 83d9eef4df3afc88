"""A local OpenAI-compatible chat server for a LLaVA-architecture transformers model: messages
with image parts (data URLs) in, text and the first token's log-probabilities out.

It exists so the vision paths (the critic that sees, the alignment rewards) run offline through
the same OpenAI client a real VLM server gets: the `tiny` profile serves a tiny random LLaVA built
here from a config (CLIP's real tokenizer, random weights), so its answers are noise: it proves
the plumbing, not the judgement. For real judgements point `--vlm-base-url` at vLLM, llama.cpp
with a projector, or OpenAI. Binds 127.0.0.1; one request is answered at a time.
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

TINY_VLM = "tiny-llava"
IMAGE_TOKEN = "<image>"
MAX_BODY = 32_000_000  # bytes: a few downscaled images as base64
MAX_NEW_TOKENS = 256


def _build_tiny_vlm(folder: Path) -> None:
    """A LLaVA with a 2-layer CLIP vision tower (32 px, 8 px patches) and a 2-layer Llama over
    CLIP's BPE vocabulary plus an image token, random weights (seed 0)."""
    import torch
    from transformers import CLIPTokenizer, CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    from promptevo.devices import quiet_libraries
    from promptevo.model_cache import write_clip_tokenizer

    quiet_libraries()
    folder.mkdir(parents=True)
    write_clip_tokenizer(folder)
    tok = CLIPTokenizer.from_pretrained(folder)
    tok.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    vision = CLIPVisionConfig(image_size=32, patch_size=8, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                              num_attention_heads=4, projection_dim=32)
    text = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, max_position_embeddings=2048, eos_token_id=tok.eos_token_id,
                       pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id)
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_index=tok.convert_tokens_to_ids(IMAGE_TOKEN),
                         vision_feature_select_strategy="default", vision_feature_layer=-1)
    torch.manual_seed(0)
    LlavaForConditionalGeneration(config).save_pretrained(folder)
    tok.save_pretrained(folder)


def tiny_vlm_folder() -> Path:
    from promptevo.model_cache import build_once

    return build_once("promptevo-tiny-llava-v1", _build_tiny_vlm)


class LlavaModel:
    """Answers chat requests with a local LLaVA folder: text parts joined, each image part an
    image token run, pixels resized to the vision tower's size with CLIP's normalisation."""

    def __init__(self, folder: Path | str, name: str = TINY_VLM):
        import torch
        from transformers import AutoTokenizer, LlavaForConditionalGeneration

        from promptevo.devices import quiet_libraries

        quiet_libraries()
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.model = LlavaForConditionalGeneration.from_pretrained(folder).eval()
        vision = self.model.config.vision_config
        self.size = vision.image_size
        self.per_image = (vision.image_size // vision.patch_size) ** 2
        self.name = name
        self._torch = torch
        self._lock = threading.Lock()

    def _pixels(self, url: str):
        import numpy as np
        from PIL import Image

        head, _, data = url.partition(",")
        if not head.startswith("data:image/") or ";base64" not in head:
            raise ValueError("images must be base64 data URLs")
        image = Image.open(io.BytesIO(base64.b64decode(data, validate=True))).convert("RGB").resize((self.size, self.size))
        mean, std = np.array([0.4815, 0.4578, 0.4082]), np.array([0.2686, 0.2613, 0.2758])
        arr = (np.asarray(image, dtype=np.float32) / 255.0 - mean) / std
        return self._torch.from_numpy(arr.transpose(2, 0, 1).astype("float32"))

    def _prompt(self, messages: list[dict[str, Any]]) -> tuple[str, list]:
        parts, pixels = [], []
        for m in messages:
            content = m.get("content")
            if isinstance(content, str):
                parts.append(f"{m.get('role', 'user')}: {content}")
                continue
            texts = []
            for part in content or []:
                if part.get("type") == "text":
                    texts.append(str(part.get("text", "")))
                elif part.get("type") == "image_url":
                    pixels.append(self._pixels(str((part.get("image_url") or {}).get("url", ""))))
                    texts.append(IMAGE_TOKEN * self.per_image)
            parts.append(f"{m.get('role', 'user')}: " + " ".join(texts))
        return "\n".join(parts) + "\nassistant:", pixels

    def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        torch = self._torch
        text, pixels = self._prompt(body.get("messages") or [])
        enc = self.tokenizer(text, return_tensors="pt", truncation=False)
        max_new = max(1, min(int(body.get("max_tokens") or 64), MAX_NEW_TOKENS))
        kwargs: dict[str, Any] = {"pixel_values": torch.stack(pixels)} if pixels else {}
        with self._lock, torch.inference_mode():
            torch.manual_seed(int(body.get("seed") or 0))
            out = self.model.generate(**enc, **kwargs, max_new_tokens=max_new, do_sample=False, output_scores=True,
                                      return_dict_in_generate=True, pad_token_id=self.tokenizer.pad_token_id)
        new = out.sequences[0, enc["input_ids"].shape[1]:]
        reply = {"role": "assistant", "content": self.tokenizer.decode(new, skip_special_tokens=True).strip()}
        choice: dict[str, Any] = {"index": 0, "finish_reason": "stop", "message": reply}
        if body.get("logprobs"):
            k = max(1, min(int(body.get("top_logprobs") or 5), 20))
            logp = torch.log_softmax(out.scores[0][0].float(), dim=-1)
            top = torch.topk(logp, k)
            first = self.tokenizer.decode(new[:1], skip_special_tokens=True)
            choice["logprobs"] = {"content": [{
                "token": first, "logprob": float(logp[new[0]]),
                "top_logprobs": [{"token": self.tokenizer.decode([int(i)]).strip(), "logprob": float(v)}
                                 for v, i in zip(top.values, top.indices)]}]}
        return {"id": "promptevo-vlm", "object": "chat.completion", "created": int(time.time()), "model": self.name,
                "choices": [choice],
                "usage": {"prompt_tokens": int(enc["input_ids"].shape[1]), "completion_tokens": int(len(new)),
                          "total_tokens": int(enc["input_ids"].shape[1] + len(new))}}


class VLMServer:
    """`with VLMServer(model) as server:` serves `model` at `server.url` (127.0.0.1, a free port)."""

    def __init__(self, model: LlavaModel):
        self.model = model
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    return self._send(404, {"error": {"message": "only /v1/chat/completions"}})
                if length > MAX_BODY:
                    return self._send(413, {"error": {"message": "request too large"}})
                try:
                    body = json.loads(self.rfile.read(length) or b"{}")
                    return self._send(200, outer.model.complete(body))
                except (ValueError, TypeError, KeyError, OSError) as exc:
                    return self._send(400, {"error": {"message": f"bad request: {type(exc).__name__}"}})

            def _send(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="promptevo-vlm", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> VLMServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_TINY: VLMServer | None = None
_TINY_LOCK = threading.Lock()


def tiny_vlm_url() -> str:
    """The process's tiny VLM server (started on first use, a daemon thread that dies with it)."""
    global _TINY
    with _TINY_LOCK:
        if _TINY is None:
            _TINY = VLMServer(LlavaModel(tiny_vlm_folder()))
        return _TINY.url
