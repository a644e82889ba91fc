#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""A test peer for Lagoon's GraphQL API, as far as lagoon-taskd uses it: the
updateTask mutation, authenticated with an HS256 service ("legacy") token.

Modelled on uselagoon/lagoon services/api (Express + apollo-server-express 3 +
graphql 16 + jsonwebtoken):
  * authMiddleware.ts: "Authorization: Bearer <jwt>" (exactly two space-separated
    parts, "bearer" in any case) else 401 {"errors":[{"message":"Unauthorized - Bearer
    token required"}]}; an undecodable token: 401 "Unauthorized - Bearer token
    malformed"; a token with a "role" claim is a legacy token, verified as
    util/auth.ts getCredentialsForLegacyToken() does, failures are 401
    "Unauthorized - Legacy token invalid: <reason>" with jsonwebtoken's reasons
    ("invalid signature", "jwt expired", "invalid algorithm", ...) and Lagoon's own
    ("Token audience mismatch.", "Cannot authenticate non-admin user with legacy
    token.", the iat-in-the-future and expiry-too-long messages). The expiry checks
    are enforced (Lagoon's LEGACY_EXPIRY_REJECT=true): iat at most 60 s ahead,
    exp - iat <= 3600, exp present. A token with "typ" but no "role" would be a
    Keycloak token (401 "Keycloak token invalid"), anything else "Bearer token
    unrecognized".
  * typeDefs.js: updateTask(input: UpdateTaskInput!): Task, UpdateTaskInput {id: Int!,
    patch: UpdateTaskPatchInput!}, UpdateTaskPatchInput {name, taskName, status:
    TaskStatusType, created, started, completed, environment: Int, service, command,
    remoteId: String}, TaskStatusType NEW PENDING RUNNING CANCELLED ERROR FAILED
    COMPLETE QUEUED ACTIVE SUCCEEDED.
  * Apollo Server 3: syntax errors 400 GRAPHQL_PARSE_FAILED, validation errors 400
    GRAPHQL_VALIDATION_FAILED, variable coercion errors (graphql-js messages, e.g.
    'Variable "$patch" got invalid value { foo: 1 }; Field "foo" is not defined by
    type "UpdateTaskPatchInput".') 400 BAD_USER_INPUT — AS3 answers 400 whenever
    there are errors and no data; resolver errors (resources/task/resolvers.ts, e.g.
    "Input patch requires at least 1 attribute") are HTTP 200 with
    {"errors":[…],"data":{"updateTask":null}}.

Usage:
  fake-lagoon-api.py (--secret S | --secret-file F) [--audience api.dev]
                     [--port 0] [--record FILE] [--fail-first N]
                     [--tls-cert PEM --tls-key PEM] [--known-ids 1,2,3]
                     [--lifetime SECONDS]
It binds 127.0.0.1, prints the port on a line of its own on stdout, and serves until
SIGTERM/SIGINT or --lifetime seconds (default 600) have passed.

Every accepted updateTask (auth and GraphQL fine, resolver succeeded) is appended to
--record as one JSON line: {"id": 42, "patch": {...as sent...}, "token": {claims},
"time": <unix seconds>}, in the order the answers were sent.

Scripting failures:
  --fail-first N   the first N POST /graphql requests get HTTP 500 (before auth).
  POST /control    {"fail": [500, 429, 401, "errors", "hang", "close"]} appends to a
                   queue; each POST /graphql takes the head of the queue instead of its
                   real answer: a number → that HTTP status with a JSON
                   {"errors":[{"message":"Scripted failure: HTTP <n>"}]} body; "errors"
                   → HTTP 200 with a GraphQL resolver error and data.updateTask null;
                   "hang" → no answer for 120 s; "close" → connection closed with no
                   answer. {"reset": true} clears the queue and the counters.
  GET /control     {"queued": [...], "requests": N, "accepted": N, "rejected": N}
/control needs no token. /status answers 200 without auth, like Lagoon's.
"""

import argparse
import base64
import hashlib
import hmac
import json
import os
import signal
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BODY_MAX = 50 * 1024 * 1024  # Apollo 3's body-parser limit
CLOCK_SKEW = 60
EXPIRY_MAX = 3600

TASK_STATUS = ["NEW", "PENDING", "RUNNING", "CANCELLED", "ERROR", "FAILED", "COMPLETE", "QUEUED",
               "ACTIVE", "SUCCEEDED"]
# UpdateTaskPatchInput members and their GraphQL types.
PATCH_FIELDS = {
    "name": "String", "taskName": "String", "status": "TaskStatusType", "created": "String",
    "started": "String", "completed": "String", "environment": "Int", "service": "String",
    "command": "String", "remoteId": "String",
}
TASK_FIELDS = ["id", "name", "taskName", "status", "created", "started", "completed", "service",
               "command", "remoteId", "environment", "__typename"]


class State:
    def __init__(self, args):
        self.args = args
        self.lock = threading.Lock()
        self.queue = []
        self.fail_first = args.fail_first
        self.requests = 0
        self.accepted = 0
        self.rejected = 0
        self.tasks = {}


STATE = None


# ----------------------------------------------------------------------------------
# JWT, as jsonwebtoken's verify() and Lagoon's getCredentialsForLegacyToken() see it.

def b64url_decode(s):
    if not isinstance(s, str) or any(c not in
                                     "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_="
                                     for c in s):
        raise ValueError("bad base64url")
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def jwt_decode(token):
    """jsonwebtoken's decode(complete: true): None when it is not a JWS with JSON parts."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        header = json.loads(b64url_decode(parts[0]))
        payload = json.loads(b64url_decode(parts[1]))
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(header, dict) or not isinstance(payload, dict):
        return None
    return header, payload, parts


def legacy_verify(token, header, payload, parts, secret, audience):
    """Returns the claims or raises ValueError with the reason Lagoon would give."""
    algs = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}
    alg = header.get("alg")
    if not parts[2]:
        raise ValueError("jwt signature is required")
    if alg not in algs:
        raise ValueError("invalid algorithm")
    expected = hmac.new(secret, (parts[0] + "." + parts[1]).encode(), algs[alg]).digest()
    try:
        got = b64url_decode(parts[2])
    except ValueError:
        raise ValueError("invalid signature")
    if not hmac.compare_digest(expected, got):
        raise ValueError("invalid signature")
    now = int(time.time())
    if "nbf" in payload:
        if not isinstance(payload["nbf"], (int, float)):
            raise ValueError("invalid nbf value")
        if payload["nbf"] > now:
            raise ValueError("jwt not active")
    if "exp" in payload:
        if not isinstance(payload["exp"], (int, float)) or isinstance(payload["exp"], bool):
            raise ValueError("invalid exp value")
        if now >= payload["exp"]:
            raise ValueError("jwt expired")

    role = payload.get("role", "none")
    sub, iss = payload.get("sub"), payload.get("iss")
    iat, exp = payload.get("iat"), payload.get("exp")
    if exp and iat:
        if not isinstance(iat, (int, float)) or isinstance(iat, bool):
            raise ValueError("iat must be a number")
        if iat > now + CLOCK_SKEW:
            raise ValueError(f"Legacy token (sub:{sub}; iss:{iss}) iat {iat} is issued before {now}")
        if exp - iat > EXPIRY_MAX:
            raise ValueError(f"Legacy token (sub:{sub}; iss:{iss}) expiry {exp - iat} is greater than {EXPIRY_MAX}")
    else:
        raise ValueError(f"Legacy token (sub:{sub}; iss:{iss}) has no expiry")
    if payload.get("aud") != audience:
        raise ValueError("Token audience mismatch.")
    if role != "admin":
        raise ValueError("Cannot authenticate non-admin user with legacy token.")
    return payload


def authenticate(auth_header, secret, audience):
    """(claims, None) or (None, (status, body))."""
    splits = (auth_header or "").split(" ")
    if len(splits) != 2 or splits[0].lower() != "bearer":
        return None, (401, {"errors": [{"message": "Unauthorized - Bearer token required"}]})
    token = splits[1]
    decoded = jwt_decode(token)
    if decoded is None:
        return None, (401, {"errors": [{"message": "Unauthorized - Bearer token malformed"}]})
    header, payload, parts = decoded
    if payload.get("role") is not None:
        try:
            return legacy_verify(token, header, payload, parts, secret, audience), None
        except ValueError as e:
            return None, (401, {"errors": [{"message": f"Unauthorized - Legacy token invalid: {e}"}]})
    if payload.get("typ") is not None:
        return None, (401, {"errors": [{"message":
                                        "Unauthorized - Keycloak token invalid: this test peer has no Keycloak"}]})
    return None, (401, {"errors": [{"message": "Unauthorized - Bearer token unrecognized"}]})


# ----------------------------------------------------------------------------------
# A small GraphQL parser (executable documents only), graphql-js-like messages.

class GraphQLError(Exception):
    def __init__(self, message, loc=None, code="GRAPHQL_VALIDATION_FAILED"):
        super().__init__(message)
        self.message = message
        self.loc = loc
        self.code = code

    def to_json(self):
        e = {"message": self.message}
        if self.loc:
            e["locations"] = [{"line": self.loc[0], "column": self.loc[1]}]
        e["extensions"] = {"code": self.code}
        return e


PUNCT = ["...", "!", "$", "&", "(", ")", ":", "=", "@", "[", "]", "{", "|", "}"]


class Lexer:
    def __init__(self, src):
        self.src = src
        self.pos = 0
        self.tokens = []
        self.lex()

    def loc(self, pos):
        line = self.src.count("\n", 0, pos) + 1
        col = pos - (self.src.rfind("\n", 0, pos) + 1) + 1
        return (line, col)

    def err(self, msg, pos):
        raise GraphQLError("Syntax Error: " + msg, self.loc(pos), "GRAPHQL_PARSE_FAILED")

    def lex(self):
        s, n = self.src, len(self.src)
        i = 0
        while True:
            while i < n and (s[i] in " \t\r\n,\ufeff"):
                i += 1
            if i < n and s[i] == "#":
                while i < n and s[i] not in "\r\n":
                    i += 1
                continue
            if i >= n:
                self.tokens.append(("EOF", None, i))
                return
            c = s[i]
            if s.startswith("...", i):
                self.tokens.append(("P", "...", i))
                i += 3
            elif c in "!$&():=@[]{|}":
                self.tokens.append(("P", c, i))
                i += 1
            elif c == "_" or c.isascii() and c.isalpha():
                j = i + 1
                while j < n and (s[j] == "_" or s[j].isascii() and s[j].isalnum()):
                    j += 1
                self.tokens.append(("Name", s[i:j], i))
                i = j
            elif c == "-" or c.isdigit():
                j = i + 1
                while j < n and (s[j].isdigit() or s[j] in ".eE+-"):
                    j += 1
                text = s[i:j]
                try:
                    if any(ch in text for ch in ".eE"):
                        self.tokens.append(("Float", float(text), i))
                    else:
                        self.tokens.append(("Int", int(text), i))
                except ValueError:
                    self.err(f"Invalid number, unexpected digit after {text}.", i)
                i = j
            elif s.startswith('"""', i):
                j = s.find('"""', i + 3)
                if j < 0:
                    self.err("Unterminated string.", n)
                self.tokens.append(("String", s[i + 3:j], i))
                i = j + 3
            elif c == '"':
                j = i + 1
                out = []
                while True:
                    if j >= n or s[j] in "\r\n":
                        self.err("Unterminated string.", j)
                    if s[j] == '"':
                        break
                    if s[j] == "\\":
                        esc = s[j + 1:j + 2]
                        m = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
                        if esc in m:
                            out.append(m[esc])
                            j += 2
                        elif esc == "u" and len(s) >= j + 6:
                            out.append(chr(int(s[j + 2:j + 6], 16)))
                            j += 6
                        else:
                            self.err(f"Invalid character escape sequence: \\{esc}.", j)
                    else:
                        out.append(s[j])
                        j += 1
                self.tokens.append(("String", "".join(out), i))
                i = j + 1
            else:
                self.err(f"Unexpected character: \"{c}\".", i)


def describe(tok):
    kind, value, _ = tok
    if kind == "EOF":
        return "<EOF>"
    if kind == "P":
        return f'"{value}"'
    if kind == "Name":
        return f'Name "{value}"'
    return f'{kind} "{value}"'


class Parser:
    def __init__(self, src):
        self.lexer = Lexer(src)
        self.toks = self.lexer.tokens
        self.i = 0

    def peek(self, kind, value=None):
        t = self.toks[self.i]
        return t[0] == kind and (value is None or t[1] == value)

    def err_expected(self, what):
        t = self.toks[self.i]
        raise GraphQLError(f"Syntax Error: Expected {what}, found {describe(t)}.", self.lexer.loc(t[2]),
                           "GRAPHQL_PARSE_FAILED")

    def unexpected(self):
        t = self.toks[self.i]
        raise GraphQLError(f"Syntax Error: Unexpected {describe(t)}.", self.lexer.loc(t[2]),
                           "GRAPHQL_PARSE_FAILED")

    def expect(self, kind, value=None):
        if not self.peek(kind, value):
            self.err_expected(f'"{value}"' if value else kind)
        t = self.toks[self.i]
        self.i += 1
        return t

    def skip(self, kind, value=None):
        if self.peek(kind, value):
            self.i += 1
            return True
        return False

    def document(self):
        defs = []
        while not self.peek("EOF"):
            defs.append(self.definition())
        if not defs:
            self.err_expected("Name")  # graphql-js: 'Syntax Error: Unexpected <EOF>.'
        return defs

    def definition(self):
        t = self.toks[self.i]
        if self.peek("P", "{"):
            return {"kind": "operation", "op": "query", "name": None, "vars": [], "sel": self.selection_set(),
                    "pos": t[2]}
        if self.peek("Name") and t[1] in ("query", "mutation", "subscription"):
            self.i += 1
            name = self.expect("Name")[1] if self.peek("Name") else None
            var_defs = self.variable_definitions()
            self.directives()
            return {"kind": "operation", "op": t[1], "name": name, "vars": var_defs, "sel": self.selection_set(),
                    "pos": t[2]}
        if self.peek("Name", "fragment"):
            self.i += 1
            name = self.expect("Name")[1]
            self.expect("Name", "on")
            self.expect("Name")
            self.directives()
            return {"kind": "fragment", "name": name, "sel": self.selection_set(), "pos": t[2]}
        self.unexpected()

    def variable_definitions(self):
        out = []
        if not self.skip("P", "("):
            return out
        while not self.skip("P", ")"):
            pos = self.toks[self.i][2]
            self.expect("P", "$")
            name = self.expect("Name")[1]
            self.expect("P", ":")
            typ = self.type_ref()
            default = None
            if self.skip("P", "="):
                default = self.value(const=True)
            self.directives()
            out.append({"name": name, "type": typ, "default": default, "pos": pos})
        return out

    def type_ref(self):
        if self.skip("P", "["):
            inner = self.type_ref()
            self.expect("P", "]")
            t = f"[{inner}]"
        else:
            t = self.expect("Name")[1]
        if self.skip("P", "!"):
            t += "!"
        return t

    def directives(self):
        while self.skip("P", "@"):
            self.expect("Name")
            self.arguments()

    def selection_set(self):
        self.expect("P", "{")
        sels = []
        while not self.skip("P", "}"):
            sels.append(self.selection())
        if not sels:
            self.err_expected("Name")
        return sels

    def selection(self):
        pos = self.toks[self.i][2]
        if self.skip("P", "..."):
            if self.peek("Name") and self.toks[self.i][1] != "on":
                name = self.expect("Name")[1]
                self.directives()
                return {"kind": "spread", "name": name, "pos": pos}
            if self.skip("Name", "on"):
                self.expect("Name")
            self.directives()
            return {"kind": "inline", "sel": self.selection_set(), "pos": pos}
        name = self.expect("Name")[1]
        alias = None
        if self.skip("P", ":"):
            alias, name = name, self.expect("Name")[1]
        args = self.arguments()
        self.directives()
        sel = self.selection_set() if self.peek("P", "{") else None
        return {"kind": "field", "name": name, "alias": alias, "args": args, "sel": sel, "pos": pos}

    def arguments(self):
        args = {}
        if not self.skip("P", "("):
            return args
        while not self.skip("P", ")"):
            pos = self.toks[self.i][2]
            name = self.expect("Name")[1]
            self.expect("P", ":")
            args[name] = (self.value(const=False), pos)
        return args

    def value(self, const):
        t = self.toks[self.i]
        kind, v, pos = t
        if kind == "P" and v == "$" and not const:
            self.i += 1
            return ("var", self.expect("Name")[1], pos)
        if kind in ("Int", "Float", "String"):
            self.i += 1
            return (kind.lower(), v, pos)
        if kind == "Name":
            self.i += 1
            if v in ("true", "false"):
                return ("boolean", v == "true", pos)
            if v == "null":
                return ("null", None, pos)
            return ("enum", v, pos)
        if kind == "P" and v == "[":
            self.i += 1
            items = []
            while not self.skip("P", "]"):
                items.append(self.value(const))
            return ("list", items, pos)
        if kind == "P" and v == "{":
            self.i += 1
            fields = {}
            while not self.skip("P", "}"):
                fpos = self.toks[self.i][2]
                name = self.expect("Name")[1]
                self.expect("P", ":")
                fields[name] = (self.value(const), fpos)
            return ("object", fields, pos)
        self.unexpected()


# ----------------------------------------------------------------------------------
# graphql-js style value printing and input coercion.

def inspect(v):
    if isinstance(v, str):
        return json.dumps(v)
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)
    if isinstance(v, list):
        return "[" + ", ".join(inspect(x) for x in v) + "]"
    if isinstance(v, dict):
        if not v:
            return "{}"
        return "{ " + ", ".join(f"{k}: {inspect(x)}" for k, x in v.items()) + " }"
    return str(v)


def lexical_distance(a, b):
    if a == b:
        return 0
    if a.lower() == b.lower():
        return 1
    a, b = a.lower(), b.lower()
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def did_you_mean(value, options):
    threshold = int(len(value) * 0.4) + 1
    scored = sorted((lexical_distance(value, o), o) for o in options)
    sugg = [o for d, o in scored if d <= threshold][:5]
    if not sugg:
        return ""
    q = [f'"{s}"' for s in sugg]
    if len(q) == 1:
        return f" Did you mean {q[0]}?"
    if len(q) == 2:
        return f" Did you mean {q[0]} or {q[1]}?"
    return " Did you mean " + ", ".join(q[:-1]) + ", or " + q[-1] + "?"


def coerce_scalar(typ, v):
    """Returns the coerced value or raises ValueError(message)."""
    if typ == "Int":
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (isinstance(v, float) and not v.is_integer()):
            raise ValueError(f"Int cannot represent non-integer value: {inspect(v)}")
        if not -2 ** 31 <= v < 2 ** 31:
            raise ValueError(f"Int cannot represent non 32-bit signed integer value: {inspect(v)}")
        return int(v)
    if typ == "String":
        if not isinstance(v, str):
            raise ValueError(f"String cannot represent a non string value: {inspect(v)}")
        return v
    if typ == "TaskStatusType":
        if not isinstance(v, str):
            raise ValueError(f'Enum "TaskStatusType" cannot represent non-string value: {inspect(v)}.')
        if v not in TASK_STATUS:
            raise ValueError(f'Value "{v}" does not exist in "TaskStatusType" enum.' + did_you_mean(v, TASK_STATUS))
        return v
    raise ValueError(f'Unknown type "{typ}".')


def coerce_patch(v, path, on_error):
    """Variable value → patch dict (UpdateTaskPatchInput)."""
    if not isinstance(v, dict):
        on_error(path, v, 'Expected type "UpdateTaskPatchInput" to be an object.')
        return None
    out = {}
    for k, x in v.items():
        if k not in PATCH_FIELDS:
            on_error(path, v, f'Field "{k}" is not defined by type "UpdateTaskPatchInput".' +
                     did_you_mean(k, list(PATCH_FIELDS)))
            continue
        if x is None:
            out[k] = None
            continue
        try:
            out[k] = coerce_scalar(PATCH_FIELDS[k], x)
        except ValueError as e:
            on_error(path + [k], x, str(e))
    return out


def coerce_variables(op, variables):
    """graphql-js getVariableValues() for the types this peer knows."""
    errors = []
    values = {}
    for d in op["vars"]:
        name, typ, loc = d["name"], d["type"], d["pos"]
        base = typ.rstrip("!")
        if base not in ("Int", "String", "TaskStatusType", "UpdateTaskPatchInput", "UpdateTaskInput"):
            errors.append(GraphQLError(f'Unknown type "{base}".', None))
            continue
        if name not in variables:
            if d["default"] is not None:
                continue
            if typ.endswith("!"):
                errors.append((f'Variable "${name}" of required type "{typ}" was not provided.', loc))
            continue
        v = variables[name]
        if v is None:
            if typ.endswith("!"):
                errors.append((f'Variable "${name}" of non-null type "{typ}" must not be null.', loc))
            else:
                values[name] = None
            continue

        def on_error(path, invalid, msg, name=name, loc=loc):
            where = f' at "{name}' + "".join(f".{p}" for p in path[1:]) + '"' if len(path) > 1 else ""
            errors.append((f'Variable "${name}" got invalid value {inspect(invalid)}{where}; {msg}', loc))

        if base == "UpdateTaskPatchInput":
            values[name] = coerce_patch(v, [name], on_error)
        elif base == "UpdateTaskInput":
            if not isinstance(v, dict):
                on_error([name], v, 'Expected type "UpdateTaskInput" to be an object.')
                continue
            inp = {}
            for k in v:
                if k not in ("id", "patch"):
                    on_error([name], v, f'Field "{k}" is not defined by type "UpdateTaskInput".')
            for k, t in (("id", "Int!"), ("patch", "UpdateTaskPatchInput!")):
                if v.get(k) is None:
                    on_error([name], v, f'Field "{k}" of required type "{t}" was not provided.')
                elif k == "id":
                    try:
                        inp["id"] = coerce_scalar("Int", v["id"])
                    except ValueError as e:
                        on_error([name, "id"], v["id"], str(e))
                else:
                    inp["patch"] = coerce_patch(v["patch"], [name, "patch"], on_error)
            values[name] = inp
        else:
            try:
                values[name] = coerce_scalar(base, v)
            except ValueError as e:
                on_error([name], v, str(e))
    return values, errors


def literal_value(node, var_types, values, expect_type, lexer, errors, used):
    """AST value → Python value, checking literals like graphql-js validation does."""
    kind, v, pos = node
    if kind == "var":
        if v not in var_types:
            errors.append(GraphQLError(f'Variable "${v}" is not defined.', lexer.loc(pos)))
            return None
        used.add(v)
        declared = var_types[v]
        if declared != expect_type and not (declared == expect_type + "!"):
            errors.append(GraphQLError(
                f'Variable "${v}" of type "{declared}" used in position expecting type "{expect_type}".',
                lexer.loc(pos)))
        return values.get(v)
    base = expect_type.rstrip("!")
    if kind == "null":
        if expect_type.endswith("!"):
            errors.append(GraphQLError(f'Expected value of type "{expect_type}", found null.', lexer.loc(pos)))
        return None
    if base in ("UpdateTaskPatchInput", "UpdateTaskInput"):
        if kind != "object":
            errors.append(GraphQLError(f'Expected value of type "{expect_type}", found {literal_text(node)}.',
                                       lexer.loc(pos)))
            return None
        fields = PATCH_FIELDS if base == "UpdateTaskPatchInput" else {"id": "Int!",
                                                                         "patch": "UpdateTaskPatchInput!"}
        out = {}
        for k, (fv, fpos) in v.items():
            if k not in fields:
                errors.append(GraphQLError(f'Field "{k}" is not defined by type "{base}".' +
                                           did_you_mean(k, list(fields)), lexer.loc(fpos)))
                continue
            out[k] = literal_value(fv, var_types, values, fields[k], lexer, errors, used)
        for k, t in fields.items():
            if t.endswith("!") and k not in v:
                errors.append(GraphQLError(f'Field "{base}.{k}" of required type "{t}" was not provided.',
                                           lexer.loc(pos)))
        return out
    ok = ((base == "Int" and kind == "int") or (base == "String" and kind == "string") or
          (base == "TaskStatusType" and kind == "enum" and v in TASK_STATUS))
    if not ok:
        if base == "TaskStatusType" and kind == "enum":
            errors.append(GraphQLError(f'Value "{v}" does not exist in "TaskStatusType" enum.' +
                                       did_you_mean(v, TASK_STATUS), lexer.loc(pos)))
        else:
            errors.append(GraphQLError(f'{base} cannot represent a non {base.lower()} value: {literal_text(node)}',
                                       lexer.loc(pos)))
        return None
    return v


def literal_text(node):
    kind, v, _ = node
    if kind == "string":
        return json.dumps(v)
    if kind in ("enum", "int", "float"):
        return str(v)
    if kind == "boolean":
        return "true" if v else "false"
    if kind == "object":
        return "{" + ", ".join(f"{k}: {literal_text(x[0])}" for k, x in v.items()) + "}"
    if kind == "list":
        return "[" + ", ".join(literal_text(x) for x in v) + "]"
    return "null"


def select_fields(sel, task, lexer, errors):
    out = {}
    for s in sel or []:
        if s["kind"] != "field":
            continue
        key = s["alias"] or s["name"]
        name = s["name"]
        if name not in TASK_FIELDS and name not in ("logs", "files", "environment", "taskName", "adminOnlyView",
                                                    "deployTokenInjection", "projectKeyInjection"):
            errors.append(GraphQLError(f'Cannot query field "{name}" on type "Task".', lexer.loc(s["pos"])))
            continue
        if name == "__typename":
            out[key] = "Task"
        elif s["sel"]:
            out[key] = None
        else:
            out[key] = task.get(name)
    return out


class Answer(Exception):
    def __init__(self, status, body):
        self.status = status
        self.body = body


def execute(request, claims):
    """Runs one GraphQL request; returns (status, body, record-or-None)."""
    if not isinstance(request, dict) or not request:
        raise Answer(400, "POST body missing, invalid Content-Type, or JSON object has no keys.")
    query = request.get("query")
    if not isinstance(query, str) or not query:
        raise Answer(400, "GraphQL operations must contain a non-empty `query` or a `persistedQuery` extension.")
    variables = request.get("variables")
    if isinstance(variables, str):
        try:
            variables = json.loads(variables)
        except ValueError:
            raise Answer(400, "Variables are invalid JSON.")
    if variables is None:
        variables = {}
    if not isinstance(variables, dict):
        raise Answer(400, "Variables are invalid JSON.")

    try:
        parser = Parser(query)
        defs = parser.document()
    except GraphQLError as e:
        return 400, {"errors": [e.to_json()]}, None
    lexer = parser.lexer

    ops = [d for d in defs if d["kind"] == "operation"]
    op_name = request.get("operationName")
    if op_name:
        ops = [o for o in ops if o["name"] == op_name]
        if not ops:
            return 400, {"errors": [{"message": f'Unknown operation named "{op_name}".',
                                     "extensions": {"code": "INTERNAL_SERVER_ERROR"}}]}, None
    elif len(ops) > 1:
        return 400, {"errors": [{"message": "Must provide operation name if query contains multiple operations.",
                                 "extensions": {"code": "INTERNAL_SERVER_ERROR"}}]}, None
    if not ops:
        return 400, {"errors": [{"message": "Must provide an operation.",
                                 "extensions": {"code": "INTERNAL_SERVER_ERROR"}}]}, None
    op = ops[0]

    # Validation (400 GRAPHQL_VALIDATION_FAILED).
    errors = []
    root = {"query": "Query", "mutation": "Mutation", "subscription": "Subscription"}[op["op"]]
    fields = [s for s in op["sel"] if s["kind"] == "field" and s["name"] != "__typename"]
    for s in op["sel"]:
        if s["kind"] != "field":
            errors.append(GraphQLError("Fragments are not supported by this test peer.", lexer.loc(s["pos"])))
        elif s["name"] != "__typename" and (root != "Mutation" or s["name"] != "updateTask"):
            errors.append(GraphQLError(f'Cannot query field "{s["name"]}" on type "{root}".'
                                       + (" This test peer only knows updateTask." if root == "Mutation" else ""),
                                       lexer.loc(s["pos"])))
    var_types = {d["name"]: d["type"] for d in op["vars"]}
    for f in fields:
        if f["name"] != "updateTask":
            continue
        for a, (_, apos) in f["args"].items():
            if a != "input":
                errors.append(GraphQLError(f'Unknown argument "{a}" on field "Mutation.updateTask".',
                                           lexer.loc(apos)))
        if "input" not in f["args"]:
            errors.append(GraphQLError('Field "updateTask" argument "input" of type "UpdateTaskInput!" is required, '
                                       'but it was not provided.', lexer.loc(f["pos"])))
        if not f["sel"]:
            errors.append(GraphQLError('Field "updateTask" of type "Task" must have a selection of subfields. '
                                       'Did you mean "updateTask { ... }"?', lexer.loc(f["pos"])))
    # Literal checks need no variable values; run them once with empty values.
    used = set()
    for f in fields:
        if f["name"] == "updateTask" and "input" in f["args"]:
            literal_value(f["args"]["input"][0], var_types, {}, "UpdateTaskInput!", lexer, errors, used)
    for d in op["vars"]:
        if d["name"] not in used:
            name = f' "{op["name"]}"' if op["name"] else ""
            errors.append(GraphQLError(f'Variable "${d["name"]}" is never used in operation{name}.',
                                       lexer.loc(d["pos"])))
    if errors:
        return 400, {"errors": [e.to_json() for e in errors]}, None

    # Variable coercion (graphql-js; Apollo 3 answers 400 BAD_USER_INPUT).
    values, verrors = coerce_variables(op, variables)
    if verrors:
        out = []
        for e in verrors:
            if isinstance(e, GraphQLError):
                out.append(e.to_json())
            else:
                msg, pos = e
                out.append(GraphQLError(msg, lexer.loc(pos), "BAD_USER_INPUT").to_json())
        return 400, {"errors": out}, None

    # Execution: the resolver.
    data = {}
    rerrors = []
    record = None
    for f in op["sel"]:
        key = f["alias"] or f["name"]
        if f["name"] == "__typename":
            data[key] = "Mutation"
            continue
        inp = literal_value(f["args"]["input"][0], var_types, values, "UpdateTaskInput!", lexer, [], set())
        tid, patch = inp.get("id"), inp.get("patch")
        if patch is None or tid is None:
            data[key] = None
            continue
        known = STATE.args.known_ids
        if known is not None and tid not in known:
            # What Lagoon's resolver does with an id it has no row for.
            rerrors.append({"message": "Cannot read properties of undefined (reading 'environment')",
                            "locations": [dict(zip(("line", "column"), lexer.loc(f["pos"])))],
                            "path": [key], "extensions": {"code": "INTERNAL_SERVER_ERROR"}})
            data[key] = None
            continue
        if not any(v is not None for v in patch.values()):
            rerrors.append({"message": "Input patch requires at least 1 attribute",
                            "locations": [dict(zip(("line", "column"), lexer.loc(f["pos"])))],
                            "path": [key], "extensions": {"code": "INTERNAL_SERVER_ERROR"}})
            data[key] = None
            continue
        with STATE.lock:
            task = STATE.tasks.setdefault(tid, {"id": tid})
            task.update({k: v for k, v in patch.items() if v is not None})
            task = dict(task)
        data[key] = select_fields(f["sel"], task, lexer, [])
        raw_patch = None
        raw_input = None
        for d in op["vars"]:
            if d["type"].rstrip("!") == "UpdateTaskPatchInput":
                raw_patch = variables.get(d["name"])
            if d["type"].rstrip("!") == "UpdateTaskInput":
                raw_input = variables.get(d["name"])
        if raw_patch is None and isinstance(raw_input, dict):
            raw_patch = raw_input.get("patch")
        record = {"id": tid, "patch": raw_patch if isinstance(raw_patch, dict) else patch,
                  "token": claims, "time": time.time()}
    body = {"data": data}
    if rerrors:
        body = {"errors": rerrors, "data": data}
    return 200, body, (record if not rerrors else None)


# ----------------------------------------------------------------------------------

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-lagoon-api"

    def log_message(self, fmt, *args):
        if STATE.args.verbose:
            sys.stderr.write("fake-lagoon-api: " + (fmt % args) + "\n")

    def send(self, status, body, content_type="application/json; charset=utf-8"):
        if isinstance(body, (dict, list)):
            data = json.dumps(body).encode()
        else:
            data = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def read_body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        n = int(self.headers.get("Content-Length") or 0)
        if n > BODY_MAX:
            raise Answer(413, "request entity too large")
        return self.rfile.read(n)

    def do_GET(self):
        if self.path == "/status":
            self.send(200, {"status": "ok"})
        elif self.path == "/control":
            with STATE.lock:
                self.send(200, {"queued": STATE.queue, "requests": STATE.requests, "accepted": STATE.accepted,
                                "rejected": STATE.rejected, "fail_first": STATE.fail_first})
        else:
            self.not_found("GET")

    def not_found(self, method):
        self.send(404, f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>Error</title>\n'
                       f'</head>\n<body>\n<pre>Cannot {method} {self.path}</pre>\n</body>\n</html>\n',
                  "text/html; charset=utf-8")

    def do_POST(self):
        try:
            body = self.read_body()
        except Answer as a:
            self.send(a.status, a.body, "text/plain")
            return
        if self.path == "/control":
            self.control(body)
        elif self.path.split("?")[0] == "/graphql":
            self.graphql(body)
        else:
            self.not_found("POST")

    def control(self, body):
        try:
            req = json.loads(body or b"{}")
        except ValueError:
            self.send(400, {"error": "control body is not JSON"})
            return
        with STATE.lock:
            if req.get("reset"):
                STATE.queue = []
                STATE.requests = STATE.accepted = STATE.rejected = 0
                STATE.fail_first = 0
            for f in req.get("fail", []):
                if not (isinstance(f, int) and 100 <= f <= 599) and f not in ("errors", "hang", "close"):
                    self.send(400, {"error": f"unknown failure {f!r}"})
                    return
                STATE.queue.append(f)
            self.send(200, {"queued": STATE.queue})

    def graphql(self, body):
        with STATE.lock:
            STATE.requests += 1
            scripted = None
            if STATE.fail_first > 0:
                STATE.fail_first -= 1
                scripted = 500
            elif STATE.queue:
                scripted = STATE.queue.pop(0)
            if scripted is not None:
                STATE.rejected += 1
        if scripted == "close":
            self.close_connection = True
            self.connection.shutdown(2)
            return
        if scripted == "hang":
            time.sleep(120)
            self.close_connection = True
            return
        if scripted == "errors":
            self.send(200, {"errors": [{"message": "Scripted GraphQL error", "locations": [{"line": 1, "column": 1}],
                                        "path": ["updateTask"], "extensions": {"code": "INTERNAL_SERVER_ERROR"}}],
                            "data": {"updateTask": None}})
            return
        if scripted is not None:
            self.send(scripted, {"errors": [{"message": f"Scripted failure: HTTP {scripted}"}]})
            return

        claims, failure = authenticate(self.headers.get("Authorization"), STATE.args.secret_bytes,
                                       STATE.args.audience)
        if failure:
            with STATE.lock:
                STATE.rejected += 1
            self.send(*failure)
            return

        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        try:
            if ctype != "application/json":
                # body-parser leaves req.body empty; Apollo 3 then answers this.
                raise Answer(400, "POST body missing, invalid Content-Type, or JSON object has no keys.")
            try:
                request = json.loads(body)
            except ValueError as e:
                raise Answer(400, f"SyntaxError: {e}")
            status, answer, record = execute(request, claims)
        except Answer as a:
            with STATE.lock:
                STATE.rejected += 1
            if isinstance(a.body, str):
                self.send(a.status, a.body, "text/plain; charset=utf-8")
            else:
                self.send(a.status, a.body)
            return

        with STATE.lock:
            if record is not None:
                STATE.accepted += 1
                if STATE.args.record:
                    with open(STATE.args.record, "a") as f:
                        f.write(json.dumps(record) + "\n")
            else:
                STATE.rejected += 1
            self.send(status, answer)


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # One line, not a traceback: clients that fail the TLS handshake on purpose
        # (tests of certificate verification) are expected here.
        e = sys.exc_info()[1]
        sys.stderr.write(f"fake-lagoon-api: connection from {client_address[0]}:{client_address[1]}: {e}\n")


def main():
    global STATE
    p = argparse.ArgumentParser(description="Fake Lagoon GraphQL API (updateTask only).")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--secret")
    g.add_argument("--secret-file")
    p.add_argument("--audience", default="api.dev")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--record")
    p.add_argument("--fail-first", type=int, default=0)
    p.add_argument("--tls-cert")
    p.add_argument("--tls-key")
    p.add_argument("--known-ids", type=lambda s: {int(x) for x in s.split(",") if x})
    p.add_argument("--lifetime", type=float, default=600)
    p.add_argument("--verbose", action="store_true")
    p.add_argument("port_arg", nargs="?", type=int)
    args = p.parse_args()
    if args.port_arg is not None:
        args.port = args.port_arg
    if args.secret_file:
        with open(args.secret_file, "rb") as f:
            args.secret_bytes = f.read().rstrip(b"\n")
    else:
        args.secret_bytes = args.secret.encode()
    STATE = State(args)

    server = Server(("127.0.0.1", args.port), Handler)
    if args.tls_cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.tls_cert, args.tls_key)
        # Handshake in the handler thread, so a stuck client cannot block accept().
        server.socket = ctx.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)

    def stop(*_):
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    timer = threading.Timer(args.lifetime, stop)
    timer.daemon = True
    timer.start()

    print(server.server_address[1], flush=True)
    server.serve_forever()
    server.server_close()


if __name__ == "__main__":
    main()
