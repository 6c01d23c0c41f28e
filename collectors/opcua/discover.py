"""`tanji discover opcua URL`: browse a server's address space for energy and production
variables and propose points for site.toml.

Walks the Objects folder (not the server's own diagnostics), reads each variable's data type
and its EngineeringUnits property (OPC UA Part 8 EUInformation), and guesses a quantity from
the unit (kWh, Wh, MWh: an energy counter; kW, W: power) or, for counts, from the name
(units, pieces, produced, count); text variables named like a product (product, article,
recipe, material, sku) or an order (order, batch, lot) are proposed as label points. Nodes are
given as namespace URI + identifier.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from decimal import Decimal

from asyncua import ua
from asyncua.client.client import Client
from asyncua.common.node import Node
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.uaerrors import UaError

ENERGY_UNITS = {"kWh": Decimal(1), "Wh": Decimal("0.001"), "MWh": Decimal(1000)}
POWER_UNITS = {"kW": Decimal(1), "W": Decimal("0.001"), "MW": Decimal(1000)}
COUNT_WORDS = ("unit", "piece", "produced", "count", "output", "pcs")
SERVER_OBJECT = ua.NodeId(ua.Int32(2253), ua.Int16(0))  # ns=0;i=2253: the Server object
INTEGER_TYPES = {"SByte", "Byte", "Int16", "UInt16", "Int32", "UInt32", "Int64", "UInt64"}
TEXT_TYPES = {"String", "LocalizedText"}
ORDER_WORDS = frozenset({"order", "batch", "lot"})  # before product words: ProductionOrder
PRODUCT_WORDS = frozenset({"product", "article", "recipe", "material", "sku", "part"})


@dataclass(frozen=True)
class Candidate:
    node: str  # nsu=...;s=...
    path: str  # browse names from Objects
    data_type: str
    unit: str | None
    quantity: str | None  # our guess, None when not energy or production
    kind: str | None
    scale: Decimal


def node_text(nodeid: ua.NodeId, namespaces: list[str]) -> str:
    kind = {
        ua.NodeIdType.Numeric: "i",
        ua.NodeIdType.TwoByte: "i",
        ua.NodeIdType.FourByte: "i",
        ua.NodeIdType.String: "s",
        ua.NodeIdType.Guid: "g",
        ua.NodeIdType.ByteString: "b",
    }[nodeid.NodeIdType]
    ident = nodeid.Identifier
    text = ident.hex() if isinstance(ident, bytes) else str(ident)
    return f"nsu={namespaces[nodeid.NamespaceIndex]};{kind}={text}"


def guess(name: str, data_type: str, unit: str | None) -> tuple[str | None, str | None, Decimal]:
    """(quantity, kind, scale) for a variable, from its unit or, for counts, its name."""
    if unit in ENERGY_UNITS:
        return "active_energy_import", "counter", ENERGY_UNITS[unit]
    if unit in POWER_UNITS:
        return "active_power", "gauge", POWER_UNITS[unit]
    numeric = data_type in INTEGER_TYPES or data_type in ("Float", "Double")
    if numeric and any(word in name.lower() for word in COUNT_WORDS):
        return "production_count", "counter", Decimal(1)
    if data_type in TEXT_TYPES:  # whole words only: "DepartmentName" names no part
        words = {w.lower() for w in re.findall(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+", name)}
        if words & ORDER_WORDS:
            return "production_order", "label", Decimal(1)
        if words & PRODUCT_WORDS:
            return "product_code", "label", Decimal(1)
    return None, None, Decimal(1)


async def browse(client: Client, limit: int = 20000) -> list[Candidate]:
    """Every variable under Objects (breadth first, at most `limit` nodes visited)."""
    namespaces = await client.get_namespace_array()
    found: list[Candidate] = []
    queue: list[tuple[Node, str]] = [(client.nodes.objects, "")]
    seen: set[ua.NodeId] = set()
    while queue and len(seen) < limit:
        node, path = queue.pop(0)
        try:
            children = await node.get_children(refs=ObjectIds.HierarchicalReferences)
        except UaError:
            continue  # not browsable for us: the rest of the tree still is
        for child in children:
            if child.nodeid in seen or child.nodeid == SERVER_OBJECT:
                continue
            seen.add(child.nodeid)
            try:
                name = str((await child.read_browse_name()).Name)
                where = f"{path}/{name}" if path else name
                node_class = await child.read_node_class()
                if node_class == ua.NodeClass.Variable and name != "EngineeringUnits":
                    found.append(await _candidate(client, child, where, namespaces))
            except (UaError, IndexError, ValueError):
                continue  # one unreadable node (access denied, ...) is skipped
            if node_class in (ua.NodeClass.Object, ua.NodeClass.Variable):
                queue.append((child, where))
    return found


async def _candidate(client: Client, node: Node, path: str, namespaces: list[str]) -> Candidate:
    type_id = await node.read_data_type()
    try:
        data_type = str((await client.get_node(type_id).read_browse_name()).Name)
    except UaError:
        data_type = str(type_id)
    unit = None
    for prop in await node.get_properties():
        if (await prop.read_browse_name()).Name == "EngineeringUnits":
            value = await prop.read_value()
            if isinstance(value, ua.EUInformation) and value.DisplayName is not None:
                unit = value.DisplayName.Text
    quantity, kind, scale = guess(path.rsplit("/", 1)[-1], data_type, unit)
    return Candidate(
        node_text(node.nodeid, namespaces), path, data_type, unit, quantity, kind, scale
    )


def site_fragment(endpoint: str, candidates: list[Candidate]) -> str:
    """A [[meters]] entry with the energy and production candidates as points; the engineer
    completes identity (serial, model, accuracy class) and checks every guess."""
    points = [c for c in candidates if c.quantity is not None]
    lines = [
        "[[meters]]",
        'id = "CHANGE-ME"',
        'serial = "CHANGE-ME"          # from the nameplate',
        'model = "CHANGE-ME"',
        'carrier = "electricity"',
        'accuracy_class = "CHANGE-ME"  # from the nameplate or certificate',
        'protocol = "opcua"',
        "",
        "[meters.connection]",
        f"endpoint = {json.dumps(endpoint)}",
        "poll_interval_s = 5.0",
        "",
    ]
    lines.insert(0, "# one [[meters]] per physical meter: split these points by meter, check each")
    names: set[str] = set()
    for c in points:
        parts = c.path.split("/")[-3:]  # e.g. Line1/EnergyMeter/ActiveEnergyImport
        name = ".".join(re.sub(r"[^a-z0-9_-]+", "_", part.lower()).strip("_") for part in parts)
        while name in names:
            name += "_2"
        names.add(name)
        lines += [
            "[[meters.points]]",
            f"name = {json.dumps(name or 'point')}",
            f'quantity = "{c.quantity}"',
            f"node = {json.dumps(c.node)}",  # a JSON string is a valid TOML basic string
        ]
        if c.kind != "label":  # a label's kind and (empty) unit follow from its quantity
            unit = {"active_energy_import": "kWh", "active_power": "kW"}.get(
                c.quantity or "", "unit"
            )
            lines += [
                f'kind = "{c.kind}"',
                f'unit = "{unit}"',
                f'data_type = "{_data_type(c.data_type)}"',
            ]
        if c.scale != 1:
            lines.append(f"scale = {c.scale}  # the server's {c.unit}")
        lines.append("")
    return "\n".join(lines)


def _data_type(name: str) -> str:
    if name == "Float":
        return "float"
    return "integer" if name in INTEGER_TYPES else "double"
