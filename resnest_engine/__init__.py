"""resnest-engine: train ResNeSt (Split-Attention) classifiers on pytorch-ignite."""
import importlib
import importlib.abc
import importlib.util
import sys
import warnings

from . import data  # noqa: F401  (its dataset registry declares DATA.DATASET's names to config)
from .models import get_model, list_models, load_pretrained

__version__ = "0.1.0"
__all__ = ["get_model", "list_models", "load_pretrained", "__version__"]

#: Modules that left the package root in 0.2 (old name -> new place). The old import paths
#: still work for one release and warn (DeprecationWarning); see CHANGELOG.md.
MOVED_MODULES = {
    "files": "storage.files", "checksum": "storage.checksum", "run_lock": "storage.run_lock",
    "imagenet": "data.imagenet", "exit_codes": "cli.exit_codes",
    "run": "workflows.train", "resume": "workflows.resume", "from_config": "workflows.from_config",
    "evaluate": "workflows.evaluate", "predict": "workflows.predict", "export": "workflows.export",
    "report": "workflows.report", "average": "workflows.average", "run_files": "workflows.run_files",
}
#: Old ``python -m resnest_engine.NAME`` spellings of the commands, still run for one release.
_MOVED_COMMANDS = {"predict": "cli.predict", "average": "cli.average"}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports a moved module's old path as its new module (the same object), with a warning."""

    def __init__(self) -> None:
        self._specs = {}

    def find_spec(self, fullname, path=None, target=None):
        package, _, name = fullname.rpartition(".")
        if package != __name__ or name not in MOVED_MODULES:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        new = f"{__name__}.{MOVED_MODULES[spec.name.rpartition('.')[2]]}"
        warnings.warn(f"{spec.name} moved to {new}; the old path goes in the next release",
                      DeprecationWarning, stacklevel=2)
        module = importlib.import_module(new)
        self._specs[new] = module.__spec__
        return module

    def exec_module(self, module) -> None:
        module.__spec__ = self._specs.get(module.__name__, module.__spec__)  # import set the alias's

    def get_code(self, fullname):  # python -m resnest_engine.predict (the spelling before cli/)
        command = _MOVED_COMMANDS.get(fullname.rpartition(".")[2])
        if command is None:
            return None
        return compile(
            "import runpy, warnings\n"
            f"warnings.warn('python -m {fullname} is deprecated: use python -m {__name__}.{command}'"
            ", DeprecationWarning)\n"
            f"runpy.run_module('{__name__}.{command}', run_name='__main__', alter_sys=True)\n",
            fullname, "exec")


if not any(isinstance(f, _MovedModules) for f in sys.meta_path):
    sys.meta_path.insert(0, _MovedModules())  # before an editable install's finder of the old files
