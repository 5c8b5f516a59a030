"""The CLI makes OpenMP's idle threads sleep (OMP_WAIT_POLICY=PASSIVE) before torch loads, unless the user chose."""

import os
import subprocess
import sys

PROBE = (
    "import os, sys; from optimlab.cli import thread_defaults; "
    "assert 'torch' not in sys.modules, 'optimlab.cli imported torch'; "
    "thread_defaults(); print(os.environ.get('OMP_WAIT_POLICY'))"
)


def _probe(**env):
    base = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", PROBE], env={**base, **env}, capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_passive_waiting_by_default_before_torch_loads():
    assert _probe() == "PASSIVE"


def test_the_users_choice_is_kept():
    assert _probe(OMP_WAIT_POLICY="ACTIVE") == "ACTIVE"


def test_no_effect_once_torch_is_loaded(monkeypatch):
    import torch  # noqa: F401  (OpenMP has read its settings: changing the variable now would only mislead)

    from optimlab.cli import thread_defaults

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    thread_defaults()
    assert "OMP_WAIT_POLICY" not in os.environ
