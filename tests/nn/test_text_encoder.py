"""ByteTextEncoder: byte tokenization (CLS first, padding, truncation, UTF-8), output shapes,
padding never changing the real tokens' outputs, gradients to every parameter, input errors, and
joint training (a linear probe on the CLS token learns to tell captions apart)."""
import pytest
import torch

from genkernels.nn import ByteTextEncoder
from genkernels.nn.text_encoder import CLS_ID, PAD_ID


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_tokenize():
    encoder = ByteTextEncoder(max_len=8)
    ids, mask = encoder.tokenize(["seven", "7", "", "a handwritten three"])
    assert ids.shape == mask.shape == (4, 8) and ids.dtype == torch.long and mask.dtype == torch.bool
    assert ids[:, 0].tolist() == [CLS_ID] * 4
    assert ids[0, 1:6].tolist() == list(b"seven") and ids[0, 6:].tolist() == [PAD_ID] * 2
    assert mask.sum(1).tolist() == [6, 2, 1, 8]  # "" is the CLS token alone; long captions are truncated
    assert ids[3, 1:].tolist() == list(b"a handw")
    ids, mask = encoder.tokenize(["drei", "sieben \u00fc"])  # L = the longest caption + 1; UTF-8 bytes
    assert ids.shape == (2, 8) and ids[1, 1:].tolist() == list("sieben \u00fc".encode())[:7]
    assert torch.equal(mask, ids != PAD_ID)


def test_forward_shapes_and_padding_invariance():
    torch.manual_seed(0)
    encoder = ByteTextEncoder(dim=32, depth=2, num_heads=4, max_len=32).eval()
    tokens, mask = encoder.encode(["seven", "a handwritten seven", ""])
    assert tokens.shape == (3, 20, 32) and mask.shape == (3, 20) and torch.isfinite(tokens).all()
    alone, alone_mask = encoder.encode(["seven"])
    assert alone.shape == (1, 6, 32) and alone_mask.all()
    torch.testing.assert_close(tokens[0, :6], alone[0], atol=1e-5, rtol=1e-5)  # padding changes nothing real
    ids, mask = encoder.tokenize(["seven", "a handwritten seven"])
    out = encoder(ids, mask)
    ids[0, 6:] = torch.randint(0, 256, (ids.shape[1] - 6,))  # other values at padded positions
    torch.testing.assert_close(encoder(ids, mask)[0, :6], out[0, :6], atol=1e-6, rtol=0)
    assert encoder(ids).shape == (2, 20, 32)  # mask None: every token is real
    assert ByteTextEncoder(depth=0)(ids, mask).shape == (2, 20, 64)


def test_gradients_reach_every_parameter():
    encoder = ByteTextEncoder(dim=16, depth=2, num_heads=2)
    tokens, mask = encoder.encode(["one", "a handwritten nine"])
    (tokens * mask[..., None]).square().sum().backward()
    missing = [name for name, p in encoder.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing


def test_errors():
    with pytest.raises(ValueError, match=r"dim \(30\) must be divisible by num_heads \(4\)"):
        ByteTextEncoder(dim=30)
    with pytest.raises(ValueError, match="max_len must be an int >= 1"):
        ByteTextEncoder(max_len=0)
    encoder = ByteTextEncoder(max_len=8)
    with pytest.raises(TypeError, match="texts must be a list of str"):
        encoder.tokenize("seven")
    with pytest.raises(TypeError, match="texts must be a list of str"):
        encoder.tokenize(["seven", 7])
    with pytest.raises(ValueError, match="texts must not be empty"):
        encoder.tokenize([])
    with pytest.raises(ValueError, match=r"ids must be in \[0, 258\)"):
        encoder(torch.tensor([[257, 300]]))
    with pytest.raises(ValueError, match="L <= max_len = 8"):
        encoder(torch.zeros(1, 9, dtype=torch.long))
    with pytest.raises(ValueError, match="ids must be an"):
        encoder(torch.zeros(1, 3))
    with pytest.raises(ValueError, match="mask must be a bool tensor"):
        encoder(torch.zeros(1, 3, dtype=torch.long), torch.ones(1, 3))


def test_trains_jointly_with_a_head():
    torch.manual_seed(0)
    encoder = ByteTextEncoder(dim=32, depth=1, num_heads=2)
    head = torch.nn.Linear(32, 3)
    captions = ["a handwritten seven", "seven", "7", "a handwritten three", "three", "3", "one", "1"]
    targets = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2])
    optimizer = torch.optim.Adam([*encoder.parameters(), *head.parameters()], lr=3e-3)
    losses = []
    for _ in range(40):
        tokens, _ = encoder.encode(captions)
        loss = torch.nn.functional.cross_entropy(head(tokens[:, 0]), targets)  # the CLS token
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0], losses[::10]
