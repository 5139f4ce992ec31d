"""Names: what an object name, a label key and a label value may look like.

Object names (workloads, namespaces, replicas, container hostnames) are DNS
labels as RFC 1123 and Kubernetes define them: lowercase letters, digits and
"-", starting and ending with a letter or digit, at most 63 characters. That
keeps every name usable as a hostname, a path component and an etcd key part
without quoting.

Labels follow Kubernetes: a key is an optional DNS-subdomain prefix and "/"
before a name of letters, digits, "-", "_" and "."; a value is such a name or
empty. The same rules apply to node labels and the node selectors matching
them, so that every label a user can write can also be selected.

The validators return a short lowercase problem that quotes the bad value, or
None when the value is fine, so callers can put the problem under their own
field path.
"""

import json
import re

# \A and \Z rather than ^ and $: "$" would also accept a trailing newline.
DNS_LABEL = re.compile(r"\A[a-z0-9](?:[-a-z0-9]*[a-z0-9])?\Z")
DNS_LABEL_MAX = 63

DNS_SUBDOMAIN = re.compile(
    r"\A[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*\Z"
)
DNS_SUBDOMAIN_MAX = 253

LABEL_NAME = re.compile(r"\A[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?\Z")
LABEL_NAME_MAX = 63

# Replica names are "<workload>-<suffix>" with a random suffix drawn from
# these characters: no vowels, so no words are spelt by accident, and no
# 0/1/3 that read like o/l/e (the alphabet Kubernetes uses).
REPLICA_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


# Longer values are cut in messages, which must stay one short line (an API
# client may send a name of any length).
_QUOTE_MAX = 80


def quote(value: str) -> str:
    """`value` for a message: JSON-quoted, and cut short if long."""
    if len(value) > _QUOTE_MAX:
        return json.dumps(value[:_QUOTE_MAX], ensure_ascii=False)[:-1] + '..."'
    return json.dumps(value, ensure_ascii=False)


def validate_dns_label(value: str) -> str | None:
    """The problem with `value` as a DNS label, or None if it is one."""
    if not value:
        return "must not be empty"
    if len(value) > DNS_LABEL_MAX:
        return f"{quote(value)} is longer than {DNS_LABEL_MAX} characters"
    if not DNS_LABEL.match(value):
        return (
            f"{quote(value)} is not a DNS label: use lowercase letters, digits and"
            ' "-", starting and ending with a letter or digit'
        )
    return None


def validate_label_key(key: str) -> str | None:
    """The problem with `key` as a label key ("[prefix/]name"), or None."""
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or len(prefix) > DNS_SUBDOMAIN_MAX or not DNS_SUBDOMAIN.match(prefix)):
        return f"label key {quote(key)} has a prefix that is not a DNS subdomain"
    if not name or len(name) > LABEL_NAME_MAX or not LABEL_NAME.match(name):
        return (
            f"label key {quote(key)} is not valid: the name must be 1-{LABEL_NAME_MAX}"
            ' letters, digits, "-", "_" or ".", starting and ending with a letter or digit'
        )
    return None


def validate_label_value(value: str) -> str | None:
    """The problem with `value` as a label value (may be empty), or None."""
    if value and (len(value) > LABEL_NAME_MAX or not LABEL_NAME.match(value)):
        return (
            f"label value {quote(value)} is not valid: use at most {LABEL_NAME_MAX}"
            ' letters, digits, "-", "_" or ".", starting and ending with a letter or digit'
        )
    return None
