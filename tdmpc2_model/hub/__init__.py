"""Hub IO of models: the published model repo (aliases, fetch), the model card, and the
from_pretrained / save_pretrained / push_to_hub mixin the agent inherits."""
