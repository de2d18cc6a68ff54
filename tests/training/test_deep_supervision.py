"""Deep supervision: the loss of every decoder head against the target at that head's grid, and heads that learn."""

import torch

from leanseg.training import TrainConfig, train
from leanseg.training.loop import deep_supervision_loss
from pipelines._common import softmax_dice_ce


def test_loss_is_the_weighted_mean_over_heads_of_the_loss_on_the_subsampled_target():
    torch.manual_seed(0)
    target = torch.randint(0, 3, (2, 1, 16, 12))
    logits = [torch.randn(2, 3, 16 // 2**i, 12 // 2**i) for i in range(3)]
    loss_fn = softmax_dice_ce()
    # an exact 2x nearest-neighbour downsampling takes every other pixel, starting at the first
    parts = [loss_fn(out, target[..., :: 2**i, :: 2**i]) for i, out in enumerate(logits)]
    expected = (parts[0] + 0.5 * parts[1] + 0.25 * parts[2]) / 1.75
    torch.testing.assert_close(deep_supervision_loss(loss_fn, logits, target), expected)
    assert deep_supervision_loss(loss_fn, logits[:1], target) == parts[0]


def test_training_with_deep_supervision_trains_the_auxiliary_heads(tmp_path):
    opts = dict(synthetic_size=32, model_kwargs={"features": (4, 8, 12), "deep_supervision": True}, hd95=False,
                batch_size=2, samples_per_case=2)
    first = {}

    def build(task):
        net = task.model()
        first["aux"] = [h.weight.detach().clone() for h in net.aux_heads]
        return net

    result = train("seg2d", synthetic=4, config=TrainConfig(out=tmp_path, seed=1, progress=False), epochs=1,
                   build_model=build, **opts)
    assert len(first["aux"]) == 1 and all(torch.isfinite(torch.tensor(result.step_losses)))
    # without a loss on it the auxiliary head would keep its initial weights (AdamW skips parameters without grads)
    assert not torch.equal(result.model.aux_heads[0].weight.detach(), first["aux"][0])
