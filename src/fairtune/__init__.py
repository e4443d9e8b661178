"""fairtune: audit a language model for bias and safety, debias it, and prove the change.

The Python API is the product; the ``fairtune`` command only wraps it::

    from fairtune import load_model, run_audit
    model = load_model("embedded")
    run = run_audit("stereotype-pairs", model=model, out="runs/base")
    run.summary["metrics"]["overall"]["pct_stereotype"]
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("fairtune")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

from fairtune.errors import FairtuneError, InputError, ModelError, OutputError  # noqa: E402
from fairtune.models import LoadedModel, load_model  # noqa: E402
from fairtune.runner import AuditRun, BundleRun, run_audit, run_bundle  # noqa: E402

__all__ = ["AuditRun", "BundleRun", "FairtuneError", "InputError", "LoadedModel", "ModelError", "OutputError",
           "__version__", "load_model", "run_audit", "run_bundle"]
