// An independent OPC UA server (node-opcua) with an energy counter, a power gauge, a
// production counter, a product code and a work order in its own namespace, for tanji's interop check (bench/opcua_interop.py).
// Listens on 127.0.0.1 only; port from argv[2]. Prints "ready" when it accepts sessions.
const { OPCUAServer, Variant, DataType } = require("node-opcua");

const NS = "urn:tanji:interop:node-opcua";

(async () => {
  const port = parseInt(process.argv[2] || "4841", 10);
  const server = new OPCUAServer({
    port,
    hostname: "127.0.0.1",
    resourcePath: "/interop",
    buildInfo: { productName: "tanji interop (node-opcua)" },
  });
  await server.initialize();
  const addressSpace = server.engine.addressSpace;
  const ns = addressSpace.registerNamespace(NS);
  const line = ns.addObject({ organizedBy: addressSpace.rootFolder.objects, browseName: "Line" });
  const start = Date.now();
  const kw = 36.0;
  const energy = () => (kw * (Date.now() - start)) / 3600000;
  ns.addVariable({
    componentOf: line,
    nodeId: "s=Line.Meter.ActiveEnergyImport",
    browseName: "ActiveEnergyImport",
    dataType: "Double",
    minimumSamplingInterval: 100,
    value: { get: () => new Variant({ dataType: DataType.Double, value: energy() }) },
  });
  ns.addVariable({
    componentOf: line,
    nodeId: "s=Line.Meter.ActivePower",
    browseName: "ActivePower",
    dataType: "Double",
    minimumSamplingInterval: 100,
    value: { get: () => new Variant({ dataType: DataType.Double, value: kw }) },
  });
  ns.addVariable({
    componentOf: line,
    nodeId: "s=Line.Production.UnitsProduced",
    browseName: "UnitsProduced",
    dataType: "UInt32",
    minimumSamplingInterval: 100,
    value: {
      get: () => new Variant({ dataType: DataType.UInt32, value: Math.floor((Date.now() - start) / 500) }),
    },
  });
  // what the line makes: a String, and the order as a LocalizedText (another encoding)
  ns.addVariable({
    componentOf: line,
    nodeId: "s=Line.Production.ProductCode",
    browseName: "ProductCode",
    dataType: "String",
    value: { get: () => new Variant({ dataType: DataType.String, value: "电池包-48V" }) },
  });
  ns.addVariable({
    componentOf: line,
    nodeId: "s=Line.Production.WorkOrder",
    browseName: "WorkOrder",
    dataType: "LocalizedText",
    value: {
      get: () =>
        new Variant({ dataType: DataType.LocalizedText, value: { locale: "zh-CN", text: "WO-2026-0042" } }),
    },
  });
  await server.start();
  console.log("ready", server.getEndpointUrl());
})().catch((err) => {
  console.error(err);
  process.exit(1);
});
