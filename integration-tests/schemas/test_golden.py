"""Golden messages and configs under schemas/examples/ against the JSON schemas, checked with
an independent validator (python3-jsonschema, Draft 2020-12):

- every schema file under schemas/ is itself a valid Draft 2020-12 schema;
- every schemas/examples/*.json is a full envelope valid against msg/envelope.v1 whose body
  is valid against msg/<type>.v<N>; snapshots and policies nested in bodies are valid
  against config/snapshot.v1 and config/policy.v1; every message type has an example;
- schemas/examples/config/policy-*.json and snapshot-*.json are valid configs;
- every schemas/examples/bad/<code>--*.json is refused, at the step its code names (the same
  order as hms_msg_decode: JSON, envelope, known type, body).

Run: python3 -m pytest integration-tests/schemas (HERMES_SOURCE_DIR may name the repo root).
"""

import json
import os
import pathlib

import jsonschema
import pytest

ROOT = pathlib.Path(os.environ.get("HERMES_SOURCE_DIR") or pathlib.Path(__file__).resolve().parents[2])
SCHEMAS = ROOT / "schemas"
EXAMPLES = SCHEMAS / "examples"
BAD = EXAMPLES / "bad"
CONFIG_EXAMPLES = EXAMPLES / "config"

SCHEMA_FILES = sorted(SCHEMAS.rglob("*.schema.json"))
VALID_MESSAGES = sorted(EXAMPLES.glob("*.json"))
BAD_MESSAGES = sorted(BAD.glob("*.json"))
POLICY_EXAMPLES = sorted(CONFIG_EXAMPLES.glob("policy-*.json"))
SNAPSHOT_EXAMPLES = sorted(CONFIG_EXAMPLES.glob("snapshot-*.json"))
ERROR_CODES = ("bad_json", "bad_envelope", "unknown_type", "bad_body")


def _no_duplicates(pairs):
    """object_pairs_hook: refuse duplicate keys, as the C decoder (JSON_REJECT_DUPLICATES)."""
    obj = {}
    for key, value in pairs:
        if key in obj:
            raise ValueError(f"duplicate key {key!r}")
        obj[key] = value
    return obj


def _reject_constant(name):
    raise ValueError(f"{name} is not JSON")


def strict_loads(text):
    """json.loads that refuses what jansson refuses: duplicate keys, NaN and Infinity."""
    return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)


def load(path):
    return strict_loads(path.read_text(encoding="utf-8"))


def schema_name(path):
    """schemas/msg/register.v1.schema.json -> "msg/register.v1" (the C registry's name)."""
    rel = path.relative_to(SCHEMAS).as_posix()
    return rel[: -len(".schema.json")]


_validators = {}


def validator(name):
    """Draft 2020-12 validator for the schema named name, or None when there is none."""
    if name not in _validators:
        path = SCHEMAS / f"{name}.schema.json"
        _validators[name] = jsonschema.Draft202012Validator(load(path)) if path.is_file() else None
    return _validators[name]


def errors(name, doc):
    return [f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
            for e in validator(name).iter_errors(doc)]


def decode_code(text):
    """The error code a strict decoder gives text, as hms_msg_decode; None when accepted."""
    try:
        env = strict_loads(text)
    except ValueError:
        return "bad_json"
    if errors("msg/envelope.v1", env):
        return "bad_envelope"
    body_schema = f"msg/{env['type']}.v{env['v']}"
    if body_schema == "msg/envelope.v1" or validator(body_schema) is None:
        return "unknown_type"
    if errors(body_schema, env["body"]):
        return "bad_body"
    return None


def message_types():
    """(type, v) of every msg/ schema except the envelope."""
    out = []
    for path in SCHEMA_FILES:
        name = schema_name(path)
        if not name.startswith("msg/") or name == "msg/envelope.v1":
            continue
        base = name[len("msg/"):]
        mtype, _, version = base.rpartition(".v")
        out.append((mtype, int(version)))
    return out


def ids(paths):
    return [p.name for p in paths]


# ---- the folders are not empty (a parametrized test over nothing would pass silently) ----


def test_folders_not_empty():
    assert SCHEMA_FILES, f"no *.schema.json under {SCHEMAS}"
    assert VALID_MESSAGES, f"no golden messages in {EXAMPLES}"
    assert BAD_MESSAGES, f"no bad messages in {BAD}"
    assert POLICY_EXAMPLES, f"no policy-*.json in {CONFIG_EXAMPLES}"
    assert SNAPSHOT_EXAMPLES, f"no snapshot-*.json in {CONFIG_EXAMPLES}"


# ---- schemas --------------------------------------------------------------------------


@pytest.mark.parametrize("path", SCHEMA_FILES, ids=ids(SCHEMA_FILES))
def test_schema_is_valid_draft_2020_12(path):
    doc = load(path)
    jsonschema.Draft202012Validator.check_schema(doc)
    # every local $ref resolves, so that validation never meets a dangling one
    v = jsonschema.Draft202012Validator(doc)

    def refs(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "$ref":
                    yield value
                else:
                    yield from refs(value)
        elif isinstance(node, list):
            for value in node:
                yield from refs(value)

    for ref in refs(doc):
        assert ref.startswith("#"), f"{path.name}: non-local $ref {ref}"
        v.resolver.resolve(ref)


def test_every_message_type_has_a_schema_and_an_example():
    types = message_types()
    assert types, "no message schemas under schemas/msg"
    missing = [f"{t}.v{v}.json" for t, v in types if not (EXAMPLES / f"{t}.v{v}.json").is_file()]
    assert not missing, f"message types without a golden example: {missing}"


# ---- valid golden messages ------------------------------------------------------------


@pytest.mark.parametrize("path", VALID_MESSAGES, ids=ids(VALID_MESSAGES))
def test_golden_message_is_valid(path):
    env = load(path)
    assert errors("msg/envelope.v1", env) == []
    mtype, v = env["type"], env["v"]
    # file name <type>.v<N>.json, or <type>.v<N>-<variant>.json
    stem = path.name[: -len(".json")]
    assert stem == f"{mtype}.v{v}" or stem.startswith(f"{mtype}.v{v}-"), (
        f"{path.name} holds a {mtype} v{v} message")
    body_schema = f"msg/{mtype}.v{v}"
    assert validator(body_schema) is not None, f"{path.name}: no schema {body_schema}"
    assert errors(body_schema, env["body"]) == []
    assert decode_code(path.read_text(encoding="utf-8")) is None


def _nested_configs(env):
    """(what, schema, doc) for the configs and policies a message carries."""
    body = env["body"]
    out = []
    snapshot = None
    if env["type"] in ("register.ok", "heartbeat.ok"):
        snapshot = body.get("snapshot")
        snapshot = snapshot["config"] if snapshot else None
    elif env["type"] == "config.snapshot":
        snapshot = body["config"]
    if snapshot is not None:
        out.append(("body config", "config/snapshot.v1", snapshot))
        for i, policy in enumerate(snapshot.get("policies", [])):
            out.append((f"policies[{i}]", "config/policy.v1", policy))
    if env["type"] == "policy.add":
        out.append(("body.policy", "config/policy.v1", body["policy"]))
    return out


@pytest.mark.parametrize("path", VALID_MESSAGES, ids=ids(VALID_MESSAGES))
def test_golden_message_configs_are_valid(path):
    env = load(path)
    for what, schema, doc in _nested_configs(env):
        assert errors(schema, doc) == [], f"{path.name}: {what}"


def test_snapshot_examples_are_realistic():
    """The config.snapshot example carries a topology and policies, not empty arrays."""
    env = load(EXAMPLES / "config.snapshot.v1.json")
    config = env["body"]["config"]
    assert config["topology"]["nodes"] and config["topology"]["links"] and config["policies"]
    names = {n["name"] for n in config["topology"]["nodes"]}
    for link in config["topology"]["links"]:
        assert link["from"] in names and link["to"] in names, link
    env = load(EXAMPLES / "register.ok.v1.json")
    assert env["body"]["snapshot"]["kind"] == "relay"
    assert env["body"]["snapshot"]["config"]["topology"]["nodes"]


# ---- config examples ------------------------------------------------------------------


@pytest.mark.parametrize("path", POLICY_EXAMPLES, ids=ids(POLICY_EXAMPLES))
def test_policy_example_is_valid(path):
    assert errors("config/policy.v1", load(path)) == []


@pytest.mark.parametrize("path", SNAPSHOT_EXAMPLES, ids=ids(SNAPSHOT_EXAMPLES))
def test_snapshot_example_is_valid(path):
    doc = load(path)
    assert errors("config/snapshot.v1", doc) == []
    for i, policy in enumerate(doc["policies"]):
        assert errors("config/policy.v1", policy) == [], f"policies[{i}]"


# ---- bad messages ---------------------------------------------------------------------


def test_bad_examples_cover_every_code():
    codes = {p.name.split("--", 1)[0] for p in BAD_MESSAGES}
    assert codes == set(ERROR_CODES), f"codes covered by {BAD}: {sorted(codes)}"


@pytest.mark.parametrize("path", BAD_MESSAGES, ids=ids(BAD_MESSAGES))
def test_bad_message_is_refused(path):
    code, sep, _ = path.name.partition("--")
    assert sep and code in ERROR_CODES, f"{path.name}: name must be <code>--<what>.json"
    text = path.read_text(encoding="utf-8")
    if code == "bad_json":
        with pytest.raises(ValueError):
            strict_loads(text)
        return
    doc = strict_loads(text)  # the others are JSON
    if code == "bad_envelope":
        assert errors("msg/envelope.v1", doc), f"{path.name}: envelope accepted"
    else:
        assert errors("msg/envelope.v1", doc) == [], f"{path.name}: the envelope should be fine"
        body_schema = f"msg/{doc['type']}.v{doc['v']}"
        if code == "unknown_type":
            assert validator(body_schema) is None, f"{path.name}: {body_schema} exists"
        else:
            assert validator(body_schema) is not None
            assert errors(body_schema, doc["body"]), f"{path.name}: body accepted"
    assert decode_code(text) == code


def test_decoder_model_refuses_what_it_should():
    """The helper above is itself checked, so that a broken helper cannot pass bad files."""
    good = (EXAMPLES / "status.v1.json").read_text(encoding="utf-8")
    assert decode_code(good) is None
    env = strict_loads(good)
    assert decode_code("{") == "bad_json"
    assert decode_code('{"a":1,"a":2}') == "bad_json"
    assert decode_code(json.dumps(dict(env, hermes=2))) == "bad_envelope"
    assert decode_code(json.dumps(dict(env, type="status.nope"))) == "unknown_type"
    assert decode_code(json.dumps(dict(env, type="envelope", body=env))) == "unknown_type"
    assert decode_code(json.dumps(dict(env, body={"x": 1}))) == "bad_body"
