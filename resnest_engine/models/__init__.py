"""ResNeSt model zoo: split attention, the ResNet builder, named variants, weight loading."""
from .dropblock import set_dropblock_prob
from .registry import UnknownModelError, get_model, list_models
from .resnet import ResNet
from .weights import WeightsError, load_pretrained

# What docs/models.md and README.md teach. The rest stays in its module: .registry (Variant,
# get_variant), .resnet (Bottleneck), .split_attention (SplitAttention), .dropblock (DropBlock),
# .weights (LoadReport, read_state_dict), .published.
__all__ = ["ResNet", "UnknownModelError", "WeightsError", "get_model", "list_models",
           "load_pretrained", "set_dropblock_prob"]
