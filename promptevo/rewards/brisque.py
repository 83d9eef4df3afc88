"""BRISQUE, no-reference technical quality, from the `brisque` package (its trained SVM ships
inside, so it scores for real offline)."""

from __future__ import annotations

from collections.abc import Sequence

from promptevo.config import ScorerConfig
from promptevo.errors import ModelNotFound
from promptevo.images import image_batch, to_uint8
from promptevo.registry import RewardModel, register_reward


class Brisque(RewardModel):
    """BRISQUE from the `brisque` package (its trained SVM ships inside): lower is better."""

    def __init__(self, config: ScorerConfig):
        self.config = config
        try:
            from brisque import BRISQUE
        except ImportError:
            raise ModelNotFound("the BRISQUE reward needs `pip install brisque opencv-python-headless` "
                                "(the README's test set-up installs them)") from None

        class Compatible(BRISQUE):
            # brisque 0.2 builds its features as an object array of 1-element arrays, which
            # numpy >= 2.4 no longer turns into floats: flatten them to plain floats first.
            def calculate_brisque_features(self, image, kernel_size=7, sigma=7 / 6):
                import numpy as np

                raw = super().calculate_brisque_features(image, kernel_size, sigma)
                return np.array([float(np.asarray(f, dtype=np.float64).reshape(-1)[0]) for f in raw], dtype=np.float64)

        self._model = Compatible(url=False)

    name = "brisque-0.2"
    version = "0.2"

    def score(self, images, prompts: Sequence[str]) -> list[float]:
        images = image_batch(images, prompts)
        arrays = to_uint8(images).permute(0, 2, 3, 1).numpy()
        return [float(self._model.score(a)) for a in arrays]


register_reward("brisque", name=lambda c: "brisque-0.2",
                measures="no-reference technical quality: noise, blur, artefacts (BRISQUE, the brisque package's trained model)",
                scale_note="0 (best) to about 100; lower is better", scale=5.0, higher_is_better=False,
                needs="pip package brisque (its SVM model ships inside)", version="0.2", arch="svm",
                modules=("brisque", "cv2", "libsvm"))(Brisque)
