"""crmshield: privacy-first analytics pipeline for CRM exports."""

__version__ = "0.1.0"
