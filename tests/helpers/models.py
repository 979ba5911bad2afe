"""The tiny models of the tests: their configurations, and a bundle that counts its calls."""

from __future__ import annotations




# the real musicnn front end under a tiny BiLSTM head (one: the shipped recipe's ensemble
# of heads has a test of its own)
TINY_HEAD = dict(lstm_units=(8,), embedding_dim=16, segments_per_track=8, max_epochs=12, patience=12,
                 batch_size=16, learning_rate=3e-3, ensemble=1)


class CountingBundle:
    """The real bundle, counting model calls (to prove a second ingest does no model work)."""

    def __init__(self, bundle) -> None:
        self._b, self.calls = bundle, 0

    def __getattr__(self, name):
        return getattr(self._b, name)

    def predict_features(self, *a, **kw):
        self.calls += 1
        return self._b.predict_features(*a, **kw)
