"""The configs shipped inside the package, by short name, as ``detectron2.model_zoo`` offers its own.

    from resnet_backbones import model_zoo
    model_zoo.list_configs()                                   # every name
    model_zoo.get_config_file("faster_rcnn_R101.yaml")         # its path inside the installed package
    cfg = model_zoo.get_config("mask_rcnn_R50.yaml")           # a CfgNode with our keys, not frozen
    lazy = model_zoo.get_config("new_baselines/mask_rcnn_R152_FPN_100ep_LSJ.py")  # needs detectron2

The yaml configs work on both engines; the ``.py`` files are detectron2 LazyConfigs (``model``,
``dataloader``, ``optimizer``, ``lr_multiplier``, ``train``) for detectron2's
``tools/lazyconfig_train_net.py`` or our ``resnet-backbones-train-net``. The lazy configs take
detectron2's own parts (heads, data, schedules, the LSJ recipe) from detectron2's model-zoo configs,
read with :func:`detectron2_config` by path, so ``detectron2.model_zoo`` (and its ``pkg_resources``
import) is never needed.
"""
import os
from typing import List

from .config import CONFIGS_DIR, ConfigError, list_config_names, load_config, resolve_config_path

__all__ = ["get_config_file", "get_config", "list_configs", "detectron2_config"]


def list_configs() -> List[str]:
    """Short names of every shipped config (``.yaml`` and LazyConfig ``.py``), sorted."""
    return list_config_names()


def get_config_file(name: str) -> str:
    """The path of a shipped config, by its short name (``faster_rcnn_R101.yaml``).

    Raises:
        ConfigError: no such config; the message lists the names that exist.
    """
    path = os.path.join(CONFIGS_DIR, name)
    if not os.path.isfile(path):
        candidates = [n for n in list_config_names() if n in (name + ".yaml", name + ".py")]
        if not candidates:
            raise ConfigError(f"no config named {name!r} ships with resnet_backbones; "
                              f"the shipped ones: {', '.join(list_config_names())}")
        path = os.path.join(CONFIGS_DIR, candidates[0])
    return resolve_config_path(path)


def get_config(name: str, trained: bool = False):
    """A shipped config, loaded: a yacs ``CfgNode`` (detectron2's defaults + our keys when detectron2
    is importable, else our standalone defaults; not frozen) for ``.yaml``, a LazyConfig
    ``DictConfig`` for ``.py`` (needs detectron2).

    ``trained=True`` asks for COCO-trained weights, as ``detectron2.model_zoo.get_config`` does; no
    trained checkpoint of these configs is published, so it is an error rather than a silent ImageNet
    initialisation. MODEL.WEIGHTS / ``model.backbone.weights`` hold the ImageNet weights.
    """
    path = get_config_file(name)
    if trained:
        raise ConfigError(
            f"{name}: resnet_backbones publishes no COCO-trained checkpoint for its configs; train one "
            "(resnet-backbones-train-net --config NAME) and set MODEL.WEIGHTS (yaml) or "
            "train.init_checkpoint (LazyConfig) to its model_final.pth, or use trained=False")
    if path.endswith(".py"):
        from detectron2.config import LazyConfig

        return LazyConfig.load(path)
    cfg = load_config(path)
    cfg.defrost()
    return cfg


def detectron2_config(name: str):
    """One of detectron2's own model-zoo LazyConfigs (``common/models/mask_rcnn_fpn.py``,
    ``new_baselines/mask_rcnn_R_50_FPN_100ep_LSJ.py``), loaded from the installed detectron2 by path.

    Raises:
        ConfigError: detectron2's configs are not inside the installed package.
    """
    import detectron2
    from detectron2.config import LazyConfig

    root = os.path.join(os.path.dirname(detectron2.__file__), "model_zoo", "configs")
    path = os.path.join(root, name)
    if not os.path.isfile(path):
        raise ConfigError(
            f"{path} does not exist: this detectron2 install lacks its model-zoo configs. Install "
            "detectron2 from its source with `pip install .` (or `pip install -e .`), which puts configs/ "
            "into detectron2/model_zoo/configs")
    return LazyConfig.load(path)
