#!/usr/bin/env python3
"""Generates kong-example/token_exchange_filter.meta.json from the policy's JSON Schema.

Kong validates a Wasm filter's configuration against the `config_schema` of the filter's
`<name>.meta.json` with a JSON Schema Draft 4 validator (lua-resty-ljsonschema; Kong refuses
a config_schema whose `$schema` names another draft). The policy's schema,
filter-config/token-exchange-filter.schema.json, is written for 2020-12, so this script
translates it to Draft 4, keyword by keyword, and fails loudly on a keyword it cannot
translate exactly, so that the two schemas can never drift apart silently.

    python3 scripts/kong_meta.py           write the file
    python3 scripts/kong_meta.py --check   exit 1 if the committed file is stale
    python3 scripts/kong_meta.py --stdout  print it

Standard library only.
"""
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "filter-config" / "token-exchange-filter.schema.json"
TARGET = ROOT / "kong-example" / "token_exchange_filter.meta.json"
DRAFT_4 = "http://json-schema.org/draft-04/schema#"

# Keywords Draft 4 has with the same meaning: copied, with their subschemas translated.
SCHEMA_VALUED = {"not", "items", "additionalItems"}
SCHEMA_LISTS = {"allOf", "anyOf", "oneOf"}
SCHEMA_MAPS = {"properties", "patternProperties", "definitions"}
PLAIN = {
    "type", "enum", "required", "minItems", "maxItems", "uniqueItems", "minimum",
    "maximum", "minLength", "maxLength", "pattern", "multipleOf", "minProperties",
    "maxProperties", "format", "title", "description", "default",
}
# Annotations Draft 4 does not know: dropped (they never change what validates).
DROPPED = {"$id", "$comment", "examples", "deprecated", "readOnly", "writeOnly"}


class Untranslatable(Exception):
    pass


def schema(node, path):
    """A subschema: booleans become {} / {"not": {}} (Draft 4 has no boolean schemas)."""
    if node is True:
        return {}
    if node is False:
        return {"not": {}}
    if not isinstance(node, dict):
        raise Untranslatable(f"{path}: a schema must be an object or a boolean")
    out = {}
    forbidden = []
    for key, value in node.items():
        at = f"{path}/{key}"
        if key in DROPPED or key == "$schema":
            continue
        if key in PLAIN:
            if key == "required" and not value:
                continue  # Draft 4 requires at least one name
            out[key] = value
        elif key in SCHEMA_VALUED:
            out[key] = schema(value, at)
        elif key in SCHEMA_LISTS:
            out.setdefault(key, []).extend(schema(v, f"{at}/{i}") for i, v in enumerate(value))
        elif key in SCHEMA_MAPS or key == "$defs":
            target = "definitions" if key == "$defs" else key
            out.setdefault(target, {}).update((k, schema(v, f"{at}/{k}")) for k, v in value.items())
        elif key == "additionalProperties":
            out[key] = value if isinstance(value, bool) else schema(value, at)
        elif key == "$ref":
            out[key] = value.replace("#/$defs/", "#/definitions/")
        elif key == "const":
            out["enum"] = [value]
        elif key in ("exclusiveMinimum", "exclusiveMaximum"):
            bound = "minimum" if key == "exclusiveMinimum" else "maximum"
            if bound in node:
                raise Untranslatable(f"{at}: both {bound} and {key}")
            out[bound] = value
            out[key] = True
        elif key == "dependentRequired":
            out.setdefault("dependencies", {}).update(value)
        elif key == "dependentSchemas":
            deps = out.setdefault("dependencies", {})
            deps.update({k: schema(v, f"{at}/{k}") for k, v in value.items()})
        elif key == "if":
            cond = schema(value, at)
            then = schema(node.get("then", True), f"{path}/then")
            other = schema(node.get("else", True), f"{path}/else")
            # if/then/else == (if and then) or (not if and else), exactly.
            out.setdefault("allOf", []).append(
                {"anyOf": [{"allOf": [cond, then]}, {"allOf": [{"not": cond}, other]}]}
            )
        elif key in ("then", "else"):
            continue  # handled with "if"
        elif key == "propertyNames":
            forbidden += property_names(node, value, out, at)
        else:
            raise Untranslatable(f"{at}: no exact Draft 4 translation for {key!r}")
    for name in forbidden:
        out.setdefault("properties", {})[name] = {"not": {}}
    return out


def property_names(node, names, out, at):
    """propertyNames, for the shapes Draft 4 can say exactly: a `not` of an `enum` (the
    names returned, to be forbidden through `properties`), and a `pattern` (through
    `patternProperties`)."""
    if not isinstance(names, dict):
        raise Untranslatable(f"{at}: propertyNames must be an object")
    forbidden = []
    for key, value in names.items():
        if key == "not" and isinstance(value, dict) and set(value) == {"enum"}:
            forbidden += value["enum"]
        elif key == "pattern" and "properties" not in node and "patternProperties" not in node:
            extra = node.get("additionalProperties", True)
            out["patternProperties"] = {value: {} if extra is True else schema(extra, at)}
            out["additionalProperties"] = False
        elif key != "description":
            raise Untranslatable(f"{at}/{key}: no exact Draft 4 translation in propertyNames")
    return forbidden


def generate():
    source = json.loads(SOURCE.read_text(encoding="utf-8"))
    config_schema = {"$schema": DRAFT_4}
    config_schema.update(schema(source, "#"))
    return json.dumps({"config_schema": config_schema}, indent=2, ensure_ascii=False) + "\n"


def main(argv):
    try:
        text = generate()
    except Untranslatable as e:
        print(f"kong_meta.py: {e}", file=sys.stderr)
        return 2
    if argv == ["--stdout"]:
        sys.stdout.write(text)
    elif argv == ["--check"]:
        current = TARGET.read_text(encoding="utf-8") if TARGET.exists() else ""
        if current != text:
            print(f"{TARGET.relative_to(ROOT)} is stale: run python3 scripts/kong_meta.py",
                  file=sys.stderr)
            return 1
    elif not argv:
        TARGET.write_text(text, encoding="utf-8")
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
