"""The configs shipped inside the package, by short name, as ``detectron2.model_zoo`` offers its own.

    from resnet_backbones import model_zoo
    model_zoo.list_configs()                                   # every name
    model_zoo.get_config_file("faster_rcnn_R101.yaml")         # its path inside the installed package
    cfg = model_zoo.get_config("mask_rcnn_R50.yaml")           # a CfgNode with our keys, not frozen
    lazy = model_zoo.get_config("new_baselines/mask_rcnn_R152_FPN_100ep_LSJ.py")  # needs detectron2
    model_zoo.get_checkpoint_url("faster_rcnn_R50.yaml")       # detectron2's COCO-trained checkpoint for it

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

__all__ = ["DETECTRON2_CHECKPOINTS", "get_checkpoint_url", "get_config_file", "get_config", "list_configs",
           "detectron2_config"]

# The 18 COCO yamls that equal a detectron2 model-zoo yaml key for key (the backbone builder's name aside;
# tests/test_detectron2.py), and the checkpoint detectron2 trained with it: its config's path and the
# file's "model_id/model_final_<hash>.pkl" (detectron2/model_zoo/model_zoo.py, checked against it by
# tests/test_detectron2.py); their COCO APs are those of detectron2's MODEL_ZOO.md (README, "Model zoo").
DETECTRON2_CHECKPOINTS = {
    "faster_rcnn_R50_C4.yaml": ("COCO-Detection/faster_rcnn_R_50_C4_1x", "137257644/model_final_721ade.pkl"),
    "faster_rcnn_R50_DC5.yaml": ("COCO-Detection/faster_rcnn_R_50_DC5_1x", "137847829/model_final_51d356.pkl"),
    "faster_rcnn_R50.yaml": ("COCO-Detection/faster_rcnn_R_50_FPN_1x", "137257794/model_final_b275ba.pkl"),
    "faster_rcnn_R50_C4_3x.yaml": ("COCO-Detection/faster_rcnn_R_50_C4_3x", "137849393/model_final_f97cb7.pkl"),
    "faster_rcnn_R50_DC5_3x.yaml": ("COCO-Detection/faster_rcnn_R_50_DC5_3x", "137849425/model_final_68d202.pkl"),
    "faster_rcnn_R50_3x.yaml": ("COCO-Detection/faster_rcnn_R_50_FPN_3x", "137849458/model_final_280758.pkl"),
    "faster_rcnn_R101_C4_3x.yaml": ("COCO-Detection/faster_rcnn_R_101_C4_3x", "138204752/model_final_298dad.pkl"),
    "faster_rcnn_R101_DC5_3x.yaml": ("COCO-Detection/faster_rcnn_R_101_DC5_3x", "138204841/model_final_3e0943.pkl"),
    "faster_rcnn_R101_3x.yaml": ("COCO-Detection/faster_rcnn_R_101_FPN_3x", "137851257/model_final_f6e8b1.pkl"),
    "mask_rcnn_R50_C4.yaml": ("COCO-InstanceSegmentation/mask_rcnn_R_50_C4_1x", "137259246/model_final_9243eb.pkl"),
    "mask_rcnn_R50_DC5.yaml": ("COCO-InstanceSegmentation/mask_rcnn_R_50_DC5_1x", "137260150/model_final_4f86c3.pkl"),
    "mask_rcnn_R50.yaml": ("COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x", "137260431/model_final_a54504.pkl"),
    "mask_rcnn_R50_C4_3x.yaml": ("COCO-InstanceSegmentation/mask_rcnn_R_50_C4_3x", "137849525/model_final_4ce675.pkl"),
    "mask_rcnn_R50_DC5_3x.yaml": ("COCO-InstanceSegmentation/mask_rcnn_R_50_DC5_3x",
                                  "137849551/model_final_84107b.pkl"),
    "mask_rcnn_R50_3x.yaml": ("COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x", "137849600/model_final_f10217.pkl"),
    "mask_rcnn_R101_C4_3x.yaml": ("COCO-InstanceSegmentation/mask_rcnn_R_101_C4_3x",
                                  "138363239/model_final_a2914c.pkl"),
    "mask_rcnn_R101_DC5_3x.yaml": ("COCO-InstanceSegmentation/mask_rcnn_R_101_DC5_3x",
                                   "138363294/model_final_0464b7.pkl"),
    "mask_rcnn_R101_3x.yaml": ("COCO-InstanceSegmentation/mask_rcnn_R_101_FPN_3x",
                               "138205316/model_final_a3ec72.pkl"),
}


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


def get_checkpoint_url(name: str) -> str:
    """The COCO-trained checkpoint detectron2 published for the detectron2 yaml that ``name`` equals
    (``detectron2://COCO-Detection/faster_rcnn_R_50_FPN_1x/137257794/model_final_b275ba.pkl``), for
    MODEL.WEIGHTS on either engine: downloaded once into ``$RESNET_BACKBONES_CACHE``.

    Raises:
        ConfigError: ``name`` has no detectron2 checkpoint (the R-101 1x, R-152 and VGG-16 configs, the
            quick schedules); the message lists those that have one.
    """
    key = name if name.endswith((".yaml", ".py")) else name + ".yaml"
    if key not in DETECTRON2_CHECKPOINTS:
        raise ConfigError(f"{name}: detectron2 published no COCO-trained checkpoint for this config; those with "
                          f"one: {', '.join(sorted(DETECTRON2_CHECKPOINTS))}. Train it with "
                          "resnet-backbones-train-net --config NAME")
    config, suffix = DETECTRON2_CHECKPOINTS[key]
    return f"detectron2://{config}/{suffix}"


def get_config(name: str, trained: bool = False):
    """A shipped config, loaded: a yacs ``CfgNode`` (detectron2's defaults + our keys when detectron2
    is importable, else our standalone defaults; not frozen) for ``.yaml``, a LazyConfig
    ``DictConfig`` for ``.py`` (needs detectron2).

    ``trained=True`` sets MODEL.WEIGHTS to detectron2's COCO-trained checkpoint for the yaml
    (:func:`get_checkpoint_url`), as ``detectron2.model_zoo.get_config`` does; for a config without one it
    is an error rather than a silent ImageNet initialisation.
    """
    path = get_config_file(name)
    if trained and not path.endswith(".py"):
        url = get_checkpoint_url(name)
    elif trained:
        raise ConfigError(
            f"{name}: no COCO-trained checkpoint is published for our LazyConfigs; train one "
            "(resnet-backbones-train-net --config NAME) and set train.init_checkpoint to its model_final.pth, "
            "or use trained=False")
    if path.endswith(".py"):
        from detectron2.config import LazyConfig

        return LazyConfig.load(path)
    cfg = load_config(path)
    cfg.defrost()
    if trained:
        cfg.MODEL.WEIGHTS = url
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
