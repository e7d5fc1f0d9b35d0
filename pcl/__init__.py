"""PCL reproduction suite: backbones, multi-branch networks, PCL and its baselines, data and training engine.

The core (models, methods, data, engine) imports only torch, torchvision and numpy; tracking (Sacred, pymongo),
launching (submitit) and analysis (pandas, matplotlib) live in layers above and are imported where used.
"""

__version__ = "0.1.0"
