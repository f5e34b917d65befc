#!/usr/bin/env python3
"""test_p4_twin: the P4 program (p4/bypass.p4) and the eBPF data plane's table layout
(services/bypass-agent/bpf/bypass_maps.h) must describe the same table: name, key fields
(order, width, exact match), actions, and each action's parameters (order, name, width), and
the same flag and event constants. Fails, naming every difference, when they drift apart.

Usage: test_p4_twin.py [bypass.p4] [bypass_maps.h]   (defaults: the files in this tree)
"""
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

C_WIDTHS = {"__u8": 8, "__s8": 8, "__u16": 16, "__be16": 16, "__u32": 32, "__be32": 32,
            "__u64": 64, "__be64": 64}


def strip_comments(text):
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    return re.sub(r"//[^\n]*", " ", text)


def block_after(text, start):
    """The text between the brace that opens at or after start and its match."""
    i = text.index("{", start)
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1:j]
    raise ValueError("unbalanced braces")


# ---- the C side ---------------------------------------------------------------------------

def c_struct(text, name):
    m = re.search(r"\bstruct\s+%s\s*\{" % re.escape(name), text)
    if not m:
        return None
    fields = []
    for decl in block_after(text, m.start()).split(";"):
        decl = decl.strip()
        if not decl:
            continue
        dm = re.fullmatch(r"(\w+)\s+(\w+)\s*(?:\[\s*(\d+)\s*\])?", decl)
        if not dm:
            raise ValueError("struct %s: cannot read field '%s'" % (name, decl))
        ctype, fname, count = dm.group(1), dm.group(2), dm.group(3)
        if ctype not in C_WIDTHS:
            raise ValueError("struct %s: field %s has type %s, not a fixed-width integer"
                             % (name, fname, ctype))
        if fname.startswith("pad"):
            continue
        fields.append((fname, C_WIDTHS[ctype] * (int(count) if count else 1)))
    return fields


def read_c(path):
    text = strip_comments(open(path).read())
    table = re.search(r'#define\s+BYPASS_TABLE_NAME\s+"(\w+)"', text).group(1)
    enum = block_after(text, re.search(r"\benum\s+bypass_action\s*\{", text).start())
    actions = []
    for name in re.findall(r"\bBYPASS_ACT_(\w+)", enum):
        if name == "NONE":
            continue  # a miss, never stored
        params = c_struct(text, "bypass_%s_params" % name.lower()) or []
        actions.append((name.lower(), params))
    consts = {m.group(1): int(m.group(2), 0)
              for m in re.finditer(r"#define\s+(BYPASS_(?:SPLICE|EV)_\w+)\s+(0x[0-9a-fA-F]+|\d+)",
                                   text)}
    return {"table": table, "key": c_struct(text, "bypass_flow_key"), "actions": actions,
            "consts": consts}


# ---- the P4 side --------------------------------------------------------------------------

def p4_types(text):
    """header/struct name -> {field: width or type name}."""
    types = {}
    for m in re.finditer(r"\b(?:header|struct|header_union)\s+(\w+)\s*\{", text):
        fields = {}
        for decl in block_after(text, m.start()).split(";"):
            decl = decl.strip()
            fm = re.fullmatch(r"bit\s*<\s*(\d+)\s*>\s+(\w+)", decl)
            if fm:
                fields[fm.group(2)] = int(fm.group(1))
                continue
            fm = re.fullmatch(r"(\w+)(?:\s*\[\s*\w+\s*\])?\s+(\w+)", decl)
            if fm:
                fields[fm.group(2)] = fm.group(1)
        types[m.group(1)] = fields
    return types


def p4_width(types, scope, expr):
    parts = expr.split(".")
    typ = scope.get(parts[0])
    if typ is None:
        raise ValueError("key %s: unknown name %s" % (expr, parts[0]))
    for part in parts[1:]:
        if typ not in types or part not in types[typ]:
            raise ValueError("key %s: %s has no field %s" % (expr, typ, part))
        typ = types[typ][part]
    if not isinstance(typ, int):
        raise ValueError("key %s is a %s, not a bit field" % (expr, typ))
    return typ


def read_p4(path, table_name):
    text = strip_comments(open(path).read())
    types = p4_types(text)
    tm = re.search(r"\btable\s+%s\s*\{" % re.escape(table_name), text)
    if not tm:
        return {"table": None, "key": [], "actions": [], "consts": {}}
    # the control that holds the table: its parameters name the header and metadata structs
    controls = [m for m in re.finditer(r"\bcontrol\s+\w+\s*\(([^)]*)\)", text)
                if m.start() < tm.start()]
    scope = {}
    for param in controls[-1].group(1).split(","):
        words = param.split()
        if len(words) >= 2:
            scope[words[-1]] = words[-2]
    body = block_after(text, tm.start())

    key = []
    kb = re.search(r"\bkey\s*=\s*\{", body)
    for entry in block_after(body, kb.start()).split(";"):
        entry = entry.strip()
        if not entry:
            continue
        em = re.fullmatch(r'([\w.]+)\s*:\s*(\w+)\s*(?:@name\s*\(\s*"(\w+)"\s*\))?', entry)
        if not em:
            raise ValueError("table %s: cannot read key '%s'" % (table_name, entry))
        expr, kind, name = em.groups()
        if kind != "exact":
            raise ValueError("table %s: key %s is %s, the eBPF map matches exactly"
                             % (table_name, expr, kind))
        key.append((name or expr.split(".")[-1], p4_width(types, scope, expr)))

    actions = []
    ab = re.search(r"\bactions\s*=\s*\{", body)
    for entry in block_after(body, ab.start()).split(";"):
        entry = entry.strip()
        if not entry or "@defaultonly" in entry:
            continue  # the miss behaviour, not an entry's action
        name = re.sub(r"@\w+(\([^)]*\))?", "", entry).strip()
        am = re.search(r"\baction\s+%s\s*\(([^)]*)\)" % re.escape(name), text)
        if not am:
            raise ValueError("action %s of table %s is not defined" % (name, table_name))
        params = []
        for param in am.group(1).split(","):
            param = param.strip()
            if not param:
                continue
            pm = re.fullmatch(r"(?:in\s+)?bit\s*<\s*(\d+)\s*>\s+(\w+)", param)
            if not pm:
                raise ValueError("action %s: cannot read parameter '%s'" % (name, param))
            params.append((pm.group(2), int(pm.group(1))))
        actions.append((name, params))

    consts = {m.group(1): int(m.group(2), 0)
              for m in re.finditer(r"\bconst\s+bit\s*<\s*\d+\s*>\s+(BYPASS_\w+)\s*=\s*"
                                   r"(0x[0-9a-fA-F]+|\d+)", text)}
    return {"table": tm and table_name, "key": key, "actions": actions, "consts": consts}


# ---- comparison ---------------------------------------------------------------------------

def compare(c, p4):
    errors = []
    if p4["table"] != c["table"]:
        errors.append("table %s (eBPF map) missing from the P4 program" % c["table"])
        return errors
    if c["key"] != p4["key"]:
        errors.append("key differs:\n  eBPF struct bypass_flow_key: %s\n  P4 table %s key:      %s"
                      % (c["key"], c["table"], p4["key"]))
    c_names = [a for a, _ in c["actions"]]
    p4_names = [a for a, _ in p4["actions"]]
    if sorted(c_names) != sorted(p4_names):
        errors.append("actions differ: eBPF %s, P4 %s" % (c_names, p4_names))
    p4_params = dict(p4["actions"])
    for name, params in c["actions"]:
        if name in p4_params and p4_params[name] != params:
            errors.append("parameters of action %s differ:\n  eBPF: %s\n  P4:   %s"
                          % (name, params, p4_params[name]))
    for const, value in c["consts"].items():
        if const not in p4["consts"]:
            errors.append("constant %s (= %#x) missing from the P4 program" % (const, value))
        elif p4["consts"][const] != value:
            errors.append("constant %s is %#x in eBPF, %#x in P4"
                          % (const, value, p4["consts"][const]))
    return errors


def main(argv):
    p4_path = argv[1] if len(argv) > 1 else os.path.join(HERE, "bypass.p4")
    h_path = argv[2] if len(argv) > 2 else os.path.join(
        ROOT, "services", "bypass-agent", "bpf", "bypass_maps.h")
    c = read_c(h_path)
    if not c["key"] or not c["actions"]:
        print("test_p4_twin: found no key or no actions in %s" % h_path)
        return 1
    p4 = read_p4(p4_path, c["table"])
    errors = compare(c, p4)
    if errors:
        for e in errors:
            print("test_p4_twin: %s" % e)
        print("test_p4_twin: %s and %s describe different tables (change both together)"
              % (p4_path, h_path))
        print("0 passed, 1 failed")
        return 1
    print("test_p4_twin: table %s, key %s, actions %s: the same in both"
          % (c["table"], [k for k, _ in c["key"]],
             ["%s(%d params)" % (a, len(p)) for a, p in c["actions"]]))
    print("1 passed, 0 failed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
