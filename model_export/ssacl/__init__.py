"""SS-ACL model package.

Import-light on purpose: ``anatomy``, ``entities`` and ``text`` are pure Python and are used by
the torch-free service; the torch modules (``model``, ``vit``, ``text_encoder``, ``decoder``,
...) are imported explicitly.
"""
