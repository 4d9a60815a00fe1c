"""torch.compile(fullgraph=True) traces the registered ops with no graph break, forward and backward."""
import pytest
import torch

from genkernels.diffusion import ddim_step, diffusion_loss, make_schedule, min_snr_weights, q_sample

SCHED = make_schedule("cosine", 50)


def _training_and_sampling(x0, noise, t, weights, model_output):
    x_t, target = q_sample(x0, noise, t, SCHED, "v")
    loss = diffusion_loss(model_output * x_t, x0, noise, t, SCHED, "v", weights=weights)
    step = ddim_step(model_output, x_t, 30, 10, SCHED, eta=0.5, prediction="v", seed=1, clip_x0=1.0)
    return loss + step.square().mean() + target.mean()


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_fullgraph_forward_backward(backend):
    torch._dynamo.reset()
    x0, noise = torch.randn(4, 3, 8), torch.randn(4, 3, 8)
    t = torch.tensor([0, 10, 20, 49])
    weights = min_snr_weights(SCHED, t, 5.0, "v")
    m1 = torch.randn(4, 3, 8, requires_grad=True)
    m2 = m1.detach().clone().requires_grad_()
    eager = _training_and_sampling(x0, noise, t, weights, m1)
    eager.backward()
    compiled = torch.compile(_training_and_sampling, fullgraph=True, backend=backend)
    out = compiled(x0, noise, t, weights, m2)
    out.backward()
    torch.testing.assert_close(out, eager)
    torch.testing.assert_close(m2.grad, m1.grad)
