"""Adapter registry: validation, content-addressed store, catalogue, versions and aliases.

Modules (nothing here imports torch, safetensors or the gateway):

- ``errors``: the one exception tree (``LoraGatewayError``, its ``GatewayError`` branch).
- ``archive``: safe extraction of .tar.gz/.tgz/.zip uploads (``ArchiveLimits``).
- ``safetensors_check``: a bounded, hand-written safetensors header parser.
- ``base_model``: ``BaseModelSpec``, the base model's sizes and supported modules.
- ``config_check``: ``adapter_config.json`` checks.
- ``validation``: ``validate_adapter_dir``, ``check_name``, ``compute_digest``
  (the module ``training`` may import to check an adapter before upload).
- ``upload``: checks on an upload's form fields (``check_upload_meta``).
- ``store``: ``AdapterStore``, the sha256-addressed directories.
- ``catalogue``: SQLAlchemy tables and transactions (SQLite or PostgreSQL).
- ``records``: ``AdapterVersion``, ``AdapterRecord``, ``CatalogueSnapshot`` (resolution).
- ``registry``: ``Registry``, which ties them together.
"""
