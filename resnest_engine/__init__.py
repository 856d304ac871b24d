"""resnest-engine: train ResNeSt (Split-Attention) classifiers on pytorch-ignite."""
from .models import get_model, list_models, load_pretrained

__version__ = "0.1.0"
__all__ = ["get_model", "list_models", "load_pretrained", "__version__"]
