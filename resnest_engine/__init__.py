"""resnest-engine: train ResNeSt (Split-Attention) classifiers on pytorch-ignite."""
from . import data  # noqa: F401  (its dataset registry declares DATA.DATASET's names to config)
from .models import get_model, list_models, load_pretrained

__version__ = "0.1.0"
__all__ = ["get_model", "list_models", "load_pretrained", "__version__"]
