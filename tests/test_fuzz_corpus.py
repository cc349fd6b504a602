"""Every seed of the fuzz corpus (fuzz/corpus/), replayed through its fuzz target.

`make fuzz` explores from these seeds with atheris; here they run once each, in
CI, without atheris. The regress-* seeds are inputs that once crashed a parser
(a 4301-digit SPF macro transformer; a SIZE of "²"): they must stay harmless.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

FUZZ = Path(__file__).resolve().parents[1] / "fuzz"


def target(name: str):
    spec = importlib.util.spec_from_file_location(f"fuzz_{name}", FUZZ / f"fuzz_{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.test_one_input


SEEDS = [(kind, path) for kind in ("reply", "spf")
         for path in sorted((FUZZ / "corpus" / kind).iterdir())]


def test_the_corpus_has_seeds_and_regressions():
    kinds = {kind for kind, _ in SEEDS}
    assert kinds == {"reply", "spf"}
    assert {path.name for _, path in SEEDS} >= {"regress-size-superscript-digit",
                                                 "regress-macro-digits-over-int-limit",
                                                 "regress-exp-macro-digits-over-int-limit"}


@pytest.mark.parametrize("kind, path", SEEDS, ids=[f"{k}/{p.name}" for k, p in SEEDS])
def test_seed_passes_its_target(kind, path):
    target(kind)(path.read_bytes())  # a finding raises
