// A charger simulator on ocpp-rpc (Node): an OCPP client that shares no code with the Python
// `ocpp` package. strictMode validates every frame, both directions, against ocpp-rpc's own schemas.
//
// Usage: node charger.js '<json options>'
//   options: {endpoint, identity, protocols, password?, answers?: {Action: status}}
// Talks JSON lines: stdin {"id": n, "call": Action, "params": {...}} -> stdout {"id": n, "result"|"error"}.
// Calls from the CSMS are answered (per `answers`) and reported as {"event": "call", method, params}.
'use strict';

const readline = require('node:readline');
const { RPCClient, createRPCError, createValidator } = require('ocpp-rpc');
const ocpp21Schemas = require('ocpp-rpc/lib/schemas/ocpp2_1.json');

// ocpp-rpc 2.2.1 looks schemas up as `urn:<Action>.req` / `.conf`, but its bundled 2.1 schemas are
// named `urn:<Action>Request` / `Response`, so strict mode would refuse every 2.1 message. Same
// schemas, ids renamed to what its validator asks for.
const ocpp21Validator = createValidator(
    'ocpp2.1',
    ocpp21Schemas.map((schema) => ({
        ...schema,
        $id: schema.$id.replace(/Request$/, '.req').replace(/Response$/, '.conf'),
    })),
);

const options = JSON.parse(process.argv[2]);
const answers = options.answers || {};

function emit(obj) {
    process.stdout.write(JSON.stringify(obj) + '\n');
}

const client = new RPCClient({
    endpoint: options.endpoint,
    identity: options.identity,
    protocols: options.protocols,
    password: options.password ?? null,
    strictMode: true,
    strictModeValidators: [ocpp21Validator],
    reconnect: false,
    callTimeoutMs: 10000,
});

client.handle('SetChargingProfile', ({ params }) => {
    emit({ event: 'call', method: 'SetChargingProfile', params });
    return { status: answers.SetChargingProfile || 'Accepted' };
});
client.handle('SetVariables', ({ params }) => {
    emit({ event: 'call', method: 'SetVariables', params });
    return {
        setVariableResult: params.setVariableData.map((item) => ({
            attributeStatus: answers.SetVariables || 'Accepted',
            component: item.component,
            variable: item.variable,
        })),
    };
});
client.handle('TriggerMessage', ({ params }) => {
    emit({ event: 'call', method: 'TriggerMessage', params });
    return { status: 'Accepted' };
});
client.handle(({ method, params }) => {
    emit({ event: 'call', method, params });
    throw createRPCError('NotImplemented');
});

let opened = false;
client.on('close', ({ code, reason }) => {
    if (!opened) return; // a refused connection is reported by connect() below
    emit({ event: 'close', code, reason: String(reason) });
    process.exit(0);
});

async function main() {
    try {
        await client.connect();
    } catch (err) {
        emit({ event: 'connect_failed', message: String(err && err.message) });
        process.exit(0);
    }
    opened = true;
    emit({ event: 'open', protocol: client.protocol });
    const lines = readline.createInterface({ input: process.stdin });
    lines.on('line', async (line) => {
        if (!line.trim()) return;
        const request = JSON.parse(line);
        if (request.close) {
            await client.close({ code: 1000 });
            return;
        }
        try {
            const result = await client.call(request.call, request.params);
            emit({ id: request.id, result });
        } catch (err) {
            emit({ id: request.id, error: { code: err.rpcErrorCode || null, message: String(err.message) } });
        }
    });
    lines.on('close', () => client.close({ code: 1000 }));
}

main();
