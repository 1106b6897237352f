"""EmoPrefer study helpers: data, judges, store, metrics, voting, ranking, report."""

__version__ = "0.1.0"
