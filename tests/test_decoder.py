"""Decoder-only SPLADE (echo input) on tiny random causal LMs built here, no downloads."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lsr import Retriever
from lsr.encoders.decoder import DecoderSpladeEncoder, EchoTokenizer
from lsr.encoders.registry import from_spec, load_encoder

WORDS = ("cats dogs purr bark sleep run fast slow sun moon rain snow red blue green tree river stone bird fish "
         "the a of and in on at is are was alpha beta gamma delta epsilon zeta eta theta iota kappa lambda omicron sigma "
         "omega").split()  # fmt: skip
SPECIALS = ["<pad>", "<unk>", "<s>", "</s>"]
TEXTS = ["cats purr", "dogs bark at the moon and the sun is red", "a bird", "green tree by the river in the rain",
         "fish", "the <s> stone"]  # fmt: skip


def build_tokenizer(bos: bool, byte_level: bool = False):
    """A WordLevel tokenizer over WORDS (with `bos`, it prepends <s> as Llama's does), or a
    byte-level BPE trained on them (Qwen2's tokenizer class rebuilds any other kind)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    if byte_level:
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        tok.train_from_iterator([" ".join(WORDS), "\n".join(WORDS)] * 5, trainer)
    else:
        vocab = {t: i for i, t in enumerate(SPECIALS + list(WORDS) + ["\n", ":"])}
        tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Split(Regex(r"\n|:"), behavior="isolated"), pre_tokenizers.WhitespaceSplit()])
        tok.add_special_tokens(SPECIALS)
    if bos:
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 2)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token="</s>")


def _config(family: str, vocab: int, hidden: int = 32):
    import transformers as tf

    common = dict(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=128, pad_token_id=0, bos_token_id=2, eos_token_id=3)  # fmt: skip
    if family == "llama":
        return tf.LlamaConfig(**common, tie_word_embeddings=False), True
    if family == "mistral":
        return tf.MistralConfig(**common, tie_word_embeddings=False), True
    if family == "qwen2":
        return tf.Qwen2Config(**common, tie_word_embeddings=True), False
    if family == "gemma":
        return tf.GemmaConfig(**common, head_dim=8, tie_word_embeddings=True), True
    if family == "gemma2":  # final logit soft-capping, small enough to bend the weights
        return tf.Gemma2Config(**common, head_dim=8, final_logit_softcapping=0.5, tie_word_embeddings=True), True
    if family == "gpt2":
        return tf.GPT2Config(vocab_size=vocab, n_embd=hidden, n_layer=2, n_head=4, n_positions=128, bos_token_id=2, eos_token_id=3), False
    if family == "mamba":  # no attention layers: bidirectional attention cannot be had
        return tf.MambaConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=2, pad_token_id=0, bos_token_id=2, eos_token_id=3), False
    if family == "rwkv":  # no attention mask at all
        return tf.RwkvConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=2, context_length=128, bos_token_id=2, eos_token_id=3), False
    raise ValueError(family)


def build_causal_lm(directory, family: str, vocab: int | None = None, hidden: int = 32, seed: int = 0):
    """A tiny random causal LM of `family` saved with its tokenizer in `directory`; an untied
    head gets a random bias-free projection, Llama's a bias added to test the biased path."""
    from transformers import AutoModelForCausalLM

    config, bos = _config(family, vocab or 400, hidden)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    with torch.no_grad():  # larger weights than the init's: more active terms, sharper test
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.3)
    model.save_pretrained(directory)
    build_tokenizer(bos, byte_level=family == "qwen2").save_pretrained(directory)
    return directory


FAMILIES = ["llama", "mistral", "qwen2", "gemma", "gemma2", "gpt2"]


def _available(family: str) -> bool:
    import transformers as tf

    names = {"llama": "LlamaConfig", "mistral": "MistralConfig", "qwen2": "Qwen2Config", "gemma": "GemmaConfig",
             "gemma2": "Gemma2Config", "gpt2": "GPT2Config"}  # fmt: skip
    return hasattr(tf, names[family])


def naive_echo(tok, model, texts, template="{text}\n{text}", bidirectional=False):
    """Full [1, S, V] logits of each text alone (no padding), log1p(relu) and a max over the
    positions of the second copy, found by token counting on the unpadded sequence. With
    `bidirectional`, the model runs with an explicit all-ones [1, 1, S, S] (non-causal) mask
    (for eager attention, which adds its mask to the scores: all zeros)."""
    before, between, after = template.split("{text}")
    piece = lambda s: tok(s, add_special_tokens=False)["input_ids"] if s else []  # noqa: E731
    bos = [tok.bos_token_id] if tok("a")["input_ids"][:1] == [tok.bos_token_id] else []
    out = []
    for text in texts:
        t = piece(text)
        head = bos + piece(before) + t + piece(between)
        ids = torch.tensor([head + t + piece(after)])
        S = ids.shape[1]
        full = None
        if bidirectional:
            eager = model.config._attn_implementation == "eager"
            full = torch.zeros(1, 1, S, S) if eager else torch.ones(1, 1, S, S, dtype=torch.bool)
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=full).logits[0]  # [S, V], soft-capped where the model caps
        second = logits[len(head) : len(head) + len(t)]
        keep = torch.tensor([i not in tok.all_special_ids for i in t])
        out.append(torch.log1p(torch.relu(second[keep])).amax(0) if keep.any() else torch.zeros(logits.shape[1]))
    return torch.stack(out).numpy()


@pytest.mark.parametrize("family", FAMILIES)
def test_echo_pooling_equals_naive_logits(tmp_path, family):
    if not _available(family):
        pytest.skip(f"transformers has no {family}")
    enc = load_encoder(str(build_causal_lm(tmp_path / family, family)), device="cpu")
    assert enc.spec["type"] == "decoder"
    if family == "llama":  # an untied head with a bias: the kernel adds it
        head = enc.model.get_output_embeddings()
        head.bias = torch.nn.Parameter(torch.randn(head.out_features) * 0.5)
    got = enc.encode(TEXTS, max_length=64).to_scipy().toarray()
    expected = naive_echo(enc.tokenizer, enc.model, TEXTS)
    assert (expected > 0).sum() > 20  # a test with something in it
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_padding_side_gives_the_same_vectors(tmp_path, family, bidirectional):
    folder = build_causal_lm(tmp_path / family, family)
    right = DecoderSpladeEncoder(folder, device="cpu", padding_side="right", bidirectional=bidirectional).encode(TEXTS, max_length=64)
    left = DecoderSpladeEncoder(folder, device="cpu", padding_side="left", bidirectional=bidirectional).encode(TEXTS, max_length=64)
    r, l = right.to_scipy().toarray(), left.to_scipy().toarray()
    assert r.sum() > 0
    np.testing.assert_allclose(l, r, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_bidirectional_pooling_equals_naive_logits_with_a_full_mask(tmp_path, family):
    if not _available(family):
        pytest.skip(f"transformers has no {family}")
    enc = DecoderSpladeEncoder(build_causal_lm(tmp_path / family, family), device="cpu", bidirectional=True)
    got = enc.encode(TEXTS, max_length=64).to_scipy().toarray()
    expected = naive_echo(enc.tokenizer, enc.model, TEXTS, bidirectional=True)
    assert (expected > 0).sum() > 20
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-5)
    causal = naive_echo(enc.tokenizer, enc.model, TEXTS)
    assert np.abs(causal - expected).max() > 1e-3  # the mask is not the causal one


@pytest.mark.parametrize("family", ["llama", "gemma2", "gpt2"])
def test_bidirectional_first_copy_sees_later_tokens(tmp_path, family):
    """The first copy's first token: with causal attention it cannot see that a later token
    changed; with bidirectional attention it does."""
    folder = build_causal_lm(tmp_path / family, family)
    for bidirectional in (False, True):
        enc = DecoderSpladeEncoder(folder, device="cpu", bidirectional=bidirectional)
        ids = enc.echo.text_ids(["cats purr", "cats bark"], max_length=64)
        assert ids[0][0] == ids[1][0] and ids[0][1] != ids[1][1]
        with torch.no_grad():
            hidden, _ = enc.hidden_states(ids)
        first = hidden[:, len(enc.echo.prefix)]  # position of "cats" in the first copy
        assert torch.equal(first[0], first[1]) != bidirectional


@pytest.mark.parametrize("family", ["mamba", "rwkv"])
def test_bidirectional_is_refused_where_the_model_cannot_attend_both_ways(tmp_path, family):
    from lsr.errors import LsrError

    if not hasattr(__import__("transformers"), {"mamba": "MambaConfig", "rwkv": "RwkvConfig"}[family]):
        pytest.skip(f"transformers has no {family}")
    folder = build_causal_lm(tmp_path / family, family)
    (folder / "lsr_decoder.json").write_text(json.dumps({"bidirectional": True}))
    with pytest.raises(LsrError, match=r"bidirectional attention is not available for \w+ForCausalLM") as err:
        load_encoder(str(folder), device="cpu")
    assert "\n" not in str(err.value) and str(folder) in str(err.value)


def test_bidirectional_and_top_k_from_the_folder_round_trip_through_the_index(tmp_path):
    folder = build_causal_lm(tmp_path / "m", "qwen2")
    (folder / "lsr_decoder.json").write_text(json.dumps({"bidirectional": True, "postprocessing": {"max_active_dims": 40}}))
    built = Retriever.build(_corpus(tmp_path / "c.jsonl"), model=str(folder), path=tmp_path / "ix", index="exact")
    loaded = Retriever.load(tmp_path / "ix")
    assert loaded.encoder.spec["bidirectional"] is True and loaded.encoder.spec == built.encoder.spec
    assert np.diff(loaded.encoder.encode_documents(TEXTS).indptr).max() == 40  # top-40 terms kept
    _check_scores(loaded, loaded.search("cats purr in the sun", k=50))
    causal = DecoderSpladeEncoder(folder, device="cpu").encode_queries(["cats purr in the sun"]).to_scipy().toarray()
    both = loaded.encoder.encode_queries(["cats purr in the sun"]).to_scipy().toarray()
    assert not np.allclose(causal, both)


def test_echo_mask_covers_the_second_copy_without_specials():
    echo = EchoTokenizer(build_tokenizer(bos=True), template="query: {text}\n{text}", padding_side="left")
    ids = echo.text_ids(["cats purr", "the <s> sun"], max_length=64)
    input_ids, attention, pool = echo.batch(ids)
    vocab = build_tokenizer(False).get_vocab()
    # <s> query : cats purr [cats purr] ("query" is <unk>; the whitespace split drops "\n"),
    # left-padded to row 1's <s> query : the <s> sun [the <s> sun]
    assert attention[0].tolist() == [0, 0] + [1] * 7 and attention[1].all()
    assert input_ids[0][pool[0]].tolist() == [vocab["cats"], vocab["purr"]]
    assert input_ids[1][pool[1]].tolist() == [vocab["the"], vocab["sun"]]  # <s> inside the text is not pooled
    assert input_ids[0][2] == vocab["<s>"]


def test_template_and_spec_round_trip(tmp_path):
    folder = build_causal_lm(tmp_path / "m", "qwen2")
    enc = DecoderSpladeEncoder(folder, device="cpu", template="passage: {text} : {text}", max_length=40)
    again = from_spec(json.loads(json.dumps(enc.spec)), None, "cpu")
    assert again.spec == enc.spec
    a, b = enc.encode_queries(["cats and dogs"]), again.encode_queries(["cats and dogs"])
    np.testing.assert_array_equal(a.to_scipy().toarray(), b.to_scipy().toarray())
    default = DecoderSpladeEncoder(folder, device="cpu").encode_queries(["cats and dogs"])
    assert not np.allclose(a.to_scipy().toarray(), default.to_scipy().toarray())  # the template matters


def _corpus(path, n: int = 40):
    rng = np.random.default_rng(0)
    rows = [{"_id": f"d{i}", "title": "", "text": " ".join(rng.choice(WORDS[:20], size=rng.integers(3, 12)))} for i in range(n)]
    rows.append({"_id": "target", "title": "", "text": "cats purr in the sun"})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_build_load_and_search_a_decoder_index(tmp_path):
    folder = build_causal_lm(tmp_path / "m", "llama")
    built = Retriever.build(_corpus(tmp_path / "c.jsonl"), model=str(folder), path=tmp_path / "ix", index="exact")
    loaded = Retriever.load(tmp_path / "ix")
    assert loaded.encoder.spec == built.encoder.spec and loaded.encoder.spec["type"] == "decoder"
    hits = loaded.search("cats purr in the sun", k=50)
    again = built.search("cats purr in the sun", k=50)
    assert [h.doc_id for h in hits] == [h.doc_id for h in again]
    np.testing.assert_allclose([h.score for h in hits], [h.score for h in again], rtol=1e-5)
    _check_scores(loaded, hits)


def _check_scores(retriever, hits):
    """Every hit's score is the dot product of the query's and the document's vectors."""
    enc = retriever.encoder
    q = enc.encode_queries(["cats purr in the sun"]).to_scipy()
    d = enc.encode_documents([h.text for h in hits]).to_scipy()
    expected = (q @ d.T).toarray()[0]
    assert len(hits) > 10 and expected.max() > 0
    np.testing.assert_allclose([h.score for h in hits], expected, rtol=1e-4)


@pytest.mark.parametrize("index", ["exact", "seismic"])
def test_a_250k_vocabulary_model_indexes_and_searches(tmp_path, index):
    from lsr.encoders.postprocess import PostProcessing

    folder = build_causal_lm(tmp_path / "m", "qwen2", vocab=250_002, hidden=16)
    # a random head activates about half of the 250k terms; keep a trained model's few hundred
    encoder = DecoderSpladeEncoder(folder, device="cpu", postprocessing=PostProcessing(max_active_dims=300))
    seismic = {"values": "float32", "summary_energy": 1.0} if index == "seismic" else None
    r = Retriever.build(_corpus(tmp_path / "c.jsonl"), model=encoder, path=tmp_path / "ix", index=index, seismic=seismic)
    assert r.encoder.dim == 250_002
    loaded = Retriever.load(tmp_path / "ix")
    _check_scores(loaded, loaded.search("cats purr in the sun", k=50))
    q = loaded.encoder.encode_queries(["cats purr in the sun"])
    assert q.dim == 250_002 and q.indices.max() >= 1000  # terms past the tokenizer's words: the full head


def test_lora_steps_reduce_the_loss_change_only_adapters_and_save_a_loadable_model(tmp_path):
    pytest.importorskip("peft")
    from lsr.train.models import DecoderSpladeModel

    folder = build_causal_lm(tmp_path / "base", "llama")
    model = DecoderSpladeModel(folder, lora={"r": 4, "alpha": 8.0, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]})
    before = {n: p.detach().clone() for n, p in model.lm.named_parameters()}
    assert all(("lora_" in n) == p.requires_grad for n, p in model.lm.named_parameters())
    queries, docs = ["cats purr", "dogs bark", "a bird", "fish in the river"], ["cats purr in the sun", "dogs bark at the moon",
                                                                                 "a bird in a tree", "fish in the river"]  # fmt: skip
    optimizer = torch.optim.AdamW([p for g in model.param_groups(1e-2, 0.0) for p in g["params"]], lr=1e-2)

    def loss() -> torch.Tensor:  # in-batch InfoNCE on a small scale
        scores = model.encode_queries(queries, 16) @ model.encode_documents(docs, 32).T
        return torch.nn.functional.cross_entropy(scores / 100.0, torch.arange(len(queries)))

    with torch.no_grad():
        first = float(loss())
    for _ in range(15):
        optimizer.zero_grad()
        loss().backward()
        optimizer.step()
    with torch.no_grad():
        assert float(loss()) < 0.7 * first
    for name, p in model.lm.named_parameters():
        changed = not torch.equal(p.detach(), before[name])
        assert changed == ("lora_" in name), name
    model.save(tmp_path / "trained")
    with torch.no_grad():
        trained = model.encode_documents(docs, 32).numpy()
    loaded = load_encoder(str(tmp_path / "trained"), device="cpu")
    assert loaded.spec["template"] == model.echo.template
    np.testing.assert_allclose(loaded.encode_documents(docs, max_length=32).to_scipy().toarray(), trained, atol=1e-4, rtol=1e-4)


def test_lsr_train_trains_a_decoder_with_lora(tmp_path, make_beir):
    pytest.importorskip("peft")
    from safetensors.torch import load_file

    from lsr.train import train

    beir, _, _ = make_beir(tmp_path / "beir")
    base = build_causal_lm(tmp_path / "base", "qwen2")
    cfg = {"model": {"base": str(base), "kind": "decoder", "template": "{text} : {text}", "query_max_length": 16, "doc_max_length": 32,
                     "bidirectional": True, "lora": {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]}},
           "data": {"dataset": str(beir), "negatives": "bm25", "n_negatives": 1, "cache_dir": str(tmp_path / "neg")},
           "regularizer": {"kind": "none"}, "loss": {"temperature": 100.0},
           "trainer": {"max_steps": 3, "batch_size": 2, "lr": 5e-3, "threads": 1, "bf16": False},
           "output": {"dir": str(tmp_path / "out")}}  # fmt: skip
    out = train(cfg)
    old, new = load_file(str(base / "model.safetensors")), load_file(str(out / "model.safetensors"))
    changed = {k for k in old if not torch.equal(old[k], new[k])}
    assert changed and all(k.endswith(("q_proj.weight", "v_proj.weight")) for k in changed)  # merged adapters only
    enc = load_encoder(str(out), device="cpu")
    assert enc.spec["type"] == "decoder" and enc.spec["template"] == "{text} : {text}" and enc.spec["bidirectional"] is True
    assert enc.encode_queries(["alpha beta"]).nnz > 0


def test_lora_config_is_checked():
    from lsr.errors import LsrError
    from lsr.train import load_config

    base = {"model": {"base": "m", "kind": "decoder"}, "data": {"dataset": "d"}, "trainer": {"max_steps": 1}, "output": {"dir": "o"}}
    cfg = load_config({**base, "model": {**base["model"], "lora": {"r": 2}}})
    assert cfg["model"]["lora"]["r"] == 2 and cfg["model"]["lora"]["target_modules"] == ["q_proj", "k_proj", "v_proj", "o_proj"]
    with pytest.raises(LsrError, match=r"\[model\] lora: needs \[model\] kind = 'decoder'"):
        load_config({**base, "model": {"base": "m", "lora": {"r": 2}}})
    with pytest.raises(LsrError, match=r"\[model\] bidirectional: needs \[model\] kind = 'decoder'"):
        load_config({**base, "model": {"base": "m", "bidirectional": True}})
    with pytest.raises(LsrError, match=r"\[model\] lora: unknown key 'rank'"):
        load_config({**base, "model": {**base["model"], "lora": {"rank": 2}}})
