"""Model builders: shapes of h and z, classifiers on a head layer, torchvision key compatibility, and Arch's JSON form."""

import pytest
import torch
import torchvision

from simclr_hpc.config import ModelSection
from simclr_hpc.models import Arch, build_backbone, build_classifier, build_simclr, classifier_on


@pytest.mark.parametrize("backbone,feat_dim", [("resnet18", 512), ("resnet50", 2048)])
def test_encoder_at_width_1_has_torchvisions_keys_and_shapes_and_loads_its_weights(backbone, feat_dim):
    ours = build_backbone(backbone, cifar_stem=False, width=1.0)
    theirs = getattr(torchvision.models, backbone)(weights=None).state_dict()
    theirs = {k: v for k, v in theirs.items() if not k.startswith("fc.")}  # the classification layer is dropped
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == {k: tuple(v.shape) for k, v in theirs.items()}
    ours.load_state_dict(theirs, strict=True)
    assert ours.feat_dim == feat_dim
    assert ours.eval()(torch.randn(1, 3, 32, 32)).shape == (1, feat_dim)


def test_simclr_model_maps_images_to_z_of_proj_dim_through_a_head_of_proj_layers():
    cfg = ModelSection(width=0.125, proj_layers=3, proj_hidden_dim=32, proj_dim=16)
    model = build_simclr(cfg)
    assert model.encoder.feat_dim == 64  # 512 * 0.125
    assert len(model.head.blocks) == 3 and model.head.out_dim_at(1) == 32 and model.head.out_dim_at(3) == 16
    assert model(torch.randn(4, 3, 16, 16)).shape == (4, 16)


@pytest.mark.parametrize("head_layers,dim", [(0, 64), (1, 64), (2, 16)])
def test_classifier_on_head_layer_k_reads_that_layers_width(head_layers, dim):
    cfg = ModelSection(width=0.125, proj_layers=2, proj_dim=16)
    simclr = build_simclr(cfg)
    clf = classifier_on(simclr, head_layers, 5)
    assert clf.linear.in_features == dim and len(clf.head_blocks) == head_layers
    assert clf.encoder is simclr.encoder  # shares the encoder: fine-tuning trains the pretrained weights
    assert clf(torch.randn(3, 3, 16, 16)).shape == (3, 5)
    assert clf.features(torch.randn(3, 3, 16, 16)).shape == (3, dim)


def test_arch_round_trips_through_its_json_form_and_rebuilds_the_same_keys():
    cfg = ModelSection(width=0.125, backbone="resnet34")
    simclr, clf = Arch("simclr", cfg), Arch("classifier", cfg, head_layers=1, num_classes=7)
    assert simclr.to_meta() == {"kind": "simclr", "model": cfg.model_dump()}
    assert clf.to_meta() == {"kind": "classifier", "model": cfg.model_dump(), "head_layers": 1, "num_classes": 7}
    assert Arch.from_meta(clf.to_meta()) == clf and Arch.from_meta(simclr.to_meta()) == simclr
    assert clf.build().state_dict().keys() == build_classifier(cfg, 1, 7).state_dict().keys()
    assert simclr.build().state_dict().keys() == build_simclr(cfg).state_dict().keys()
