"""attn-report: a static, honest diagnostic report of a transformer's attention."""

__version__ = "0.1.0"
