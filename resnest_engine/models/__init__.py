"""ResNeSt model zoo: split attention, the ResNet builder, named variants, weight loading."""
from .dropblock import DropBlock, set_dropblock_prob
from .registry import Variant, get_model, get_variant, list_models, UnknownModelError
from .resnet import Bottleneck, ResNet
from .split_attention import SplitAttention
from .weights import LoadReport, WeightsError, load_pretrained, read_state_dict

__all__ = [
    "Bottleneck", "DropBlock", "LoadReport", "ResNet", "SplitAttention", "UnknownModelError",
    "Variant", "WeightsError", "get_model", "get_variant", "list_models", "load_pretrained",
    "read_state_dict", "set_dropblock_prob",
]
