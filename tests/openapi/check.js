#!/usr/bin/env node
/*
 * Checks schemas/openapi.yaml (run through run.sh, which installs the pinned packages):
 *
 *   1. it is a valid OpenAPI 3.1 document once every external $ref (./x.json) is
 *      resolved (@apidevtools/swagger-parser: a missing file or pointer, or anything the
 *      OpenAPI 3.1 schema refuses, fails);
 *   2. it matches api/main.c's route table both ways: the same paths and methods, the
 *      route name as operationId, the route's auth as security and its schema as the
 *      request body; path parameters declared;
 *   3. every response a route can give is there (401, 403, 400/413/415 for bodies, 503
 *      with Retry-After), every JSON body is a schema file of schemas/, and the error
 *      codes and status codes of api/*.c appear in error.json and the document;
 *   4. the schemas that repeat one another (schemas cannot $ref across files) agree, and
 *      every schemas/*.json compiles under Ajv (draft 7, strict) and every example in
 *      the document validates against its schema;
 *   5. the checks themselves still catch broken documents (self-test on mutated copies).
 *
 *   node check.js REPO_ROOT [OPENAPI_YAML]
 *
 * Prints "ok - ..." or "not ok - ..." per check and "N passed, N failed"; exit 1 on any
 * failure.
 */
'use strict';

const fs = require('fs');
const os = require('os');
const path = require('path');
const SwaggerParser = require('@apidevtools/swagger-parser');
const Ajv = require('ajv');
const addFormats = require('ajv-formats');

const root = path.resolve(process.argv[2] || path.join(__dirname, '..', '..'));
const docPath = path.resolve(process.argv[3] || path.join(root, 'schemas', 'openapi.yaml'));
const schemasDir = path.dirname(docPath);
const mainC = path.join(root, 'api', 'main.c');
const apiDir = path.join(root, 'api');

const METHODS = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace'];
const AUTH_SCHEME = { AUTH_TOKEN: 'bearerAuth', AUTH_CALLBACK: 'callbackToken' };

let passed = 0;
let failed = 0;

function report(ok, name, problems) {
    if (ok) {
        passed++;
        console.log(`ok - ${name}`);
    } else {
        failed++;
        console.log(`not ok - ${name}`);
        for (const p of problems || [])
            console.log(`    # ${String(p).split('\n').join('\n    # ')}`);
    }
}

/* Run fn (returning a list of problems, or throwing) as one check. */
async function check(name, fn) {
    let problems;
    try {
        problems = (await fn()) || [];
    } catch (e) {
        /* A bug in this script deserves its stack; a finding only its message. */
        const bug = e instanceof TypeError || e instanceof ReferenceError || e instanceof RangeError;
        problems = [bug && e.stack ? e.stack : e && e.message ? `${e.name}: ${e.message}` : String(e)];
    }
    report(problems.length === 0, name, problems);
    return problems;
}

/* ------------------------------------------------------------------ inputs */

/* The route table of api/main.c: [{method, pattern, name, auth, schema}]. */
function readRoutes(file, text = fs.readFileSync(file, 'utf8')) {
    const block = /static\s+const\s+struct\s+route\s+routes\s*\[\s*\]\s*=\s*\{([\s\S]*?)\n\};/.exec(text);
    if (!block)
        throw new Error(`${file}: no 'static const struct route routes[] = {...};' table found`);
    const re =
        /\{\s*EVHTTP_REQ_([A-Z]+)\s*,\s*"([^"]+)"\s*,\s*"([^"]+)"\s*,\s*(AUTH_[A-Z]+)\s*,\s*(NULL|"[^"]*")\s*,\s*\w+\s*\}/g;
    const routes = [];
    let m;
    while ((m = re.exec(block[1])))
        routes.push({
            method: m[1].toLowerCase(),
            pattern: m[2],
            name: m[3],
            auth: m[4],
            schema: m[5] === 'NULL' ? null : m[5].slice(1, -1),
        });
    const entries = (block[1].match(/EVHTTP_REQ_/g) || []).length;
    if (entries !== routes.length)
        throw new Error(`${file}: the route table has ${entries} entries but only ${routes.length} ` +
                        'could be read; update the pattern in tests/openapi/check.js');
    if (routes.length === 0)
        throw new Error(`${file}: the route table is empty`);
    return routes;
}

/* api_reply_* calls in api/*.c: error codes with their status, and every status used. */
function readReplies(dir) {
    const codes = new Map(); /* code -> Set of statuses */
    const statuses = new Set();
    for (const f of fs.readdirSync(dir).filter((f) => f.endsWith('.c'))) {
        const text = fs.readFileSync(path.join(dir, f), 'utf8');
        let m;
        const err = /api_reply_error\s*\(\s*[^,]+,\s*(\d{3})\s*,\s*"([^"]*)"/g;
        while ((m = err.exec(text))) {
            if (!codes.has(m[2]))
                codes.set(m[2], new Set());
            codes.get(m[2]).add(Number(m[1]));
        }
        const any = /api_reply_(?:error|json|text)\s*\(\s*[^,]+,\s*(\d{3})\b/g;
        while ((m = any.exec(text)))
            statuses.add(Number(m[1]));
        const start = /evhttp_send_reply_start\s*\(\s*[^,]+,\s*(\d{3})\b/g;
        while ((m = start.exec(text)))
            statuses.add(Number(m[1]));
    }
    return { codes, statuses };
}

function readJson(file) {
    return JSON.parse(fs.readFileSync(file, 'utf8'));
}

/* ------------------------------------------------------------------ document helpers */

/* Follow a local "#/..." reference in the raw document. */
function local(doc, obj) {
    let seen = 0;
    while (obj && typeof obj.$ref === 'string' && obj.$ref.startsWith('#/')) {
        if (++seen > 20)
            throw new Error(`reference loop at ${obj.$ref}`);
        let cur = doc;
        for (const raw of obj.$ref.slice(2).split('/')) {
            const key = decodeURIComponent(raw).replace(/~1/g, '/').replace(/~0/g, '~');
            cur = cur == null ? undefined : cur[key];
        }
        if (cur === undefined)
            throw new Error(`${obj.$ref} does not resolve`);
        obj = cur;
    }
    return obj;
}

/* [{key: "get /v1/x/{}", path, method, op, item}] of the raw document. */
function operations(doc) {
    const out = [];
    for (const [p, item0] of Object.entries(doc.paths || {})) {
        const item = local(doc, item0);
        for (const method of METHODS)
            if (item && item[method])
                out.push({ key: `${method} ${p.replace(/\{[^}]*\}/g, '{}')}`, path: p, method, op: item[method], item });
    }
    return out;
}

function params(doc, o) {
    return [...(o.item.parameters || []), ...(o.op.parameters || [])].map((p) => local(doc, p));
}

/* "./x.json" or "./x.json#/definitions/y" -> {file, pointer}, else null. */
function fileRef(schema) {
    const m = schema && typeof schema.$ref === 'string' && /^\.\/([A-Za-z0-9_.-]+\.json)(#.*)?$/.exec(schema.$ref);
    return m ? { file: m[1], pointer: m[2] || '' } : null;
}

/* ------------------------------------------------------------------ checks */

/* Drift between the route table and the document. Returns a list of problems. */
function routeProblems(doc, routes) {
    const problems = [];
    const ops = new Map(operations(doc).map((o) => [o.key, o]));
    const global = JSON.stringify(doc.security || []);
    if (global !== JSON.stringify([{ bearerAuth: [] }]))
        problems.push(`global security is ${global}, not [{"bearerAuth":[]}]`);
    for (const r of routes) {
        const key = `${r.method} ${r.pattern}`;
        const o = ops.get(key);
        const label = `${r.method.toUpperCase()} ${r.pattern} (${r.name})`;
        if (!o) {
            problems.push(`${label}: not in the document`);
            continue;
        }
        ops.delete(key);
        if (o.op.operationId !== r.name)
            problems.push(`${label}: operationId is ${JSON.stringify(o.op.operationId)}, not the route name`);
        const sec = o.op.security === undefined ? doc.security : o.op.security;
        const want = r.auth === 'AUTH_NONE' ? [] : [{ [AUTH_SCHEME[r.auth]]: [] }];
        if (!AUTH_SCHEME[r.auth] && r.auth !== 'AUTH_NONE')
            problems.push(`${label}: unknown auth ${r.auth}; teach tests/openapi/check.js its scheme`);
        else if (JSON.stringify(sec) !== JSON.stringify(want))
            problems.push(`${label}: security is ${JSON.stringify(sec)}, ${r.auth} wants ${JSON.stringify(want)}`);
        const body = o.op.requestBody && local(doc, o.op.requestBody);
        if (r.schema) {
            const ref = body && body.content && body.content['application/json'] &&
                        body.content['application/json'].schema && body.content['application/json'].schema.$ref;
            if (ref !== `./${r.schema}.json`)
                problems.push(`${label}: request body schema is ${JSON.stringify(ref)}, the route validates ./${r.schema}.json`);
            if (!body || body.required !== true)
                problems.push(`${label}: the request body must be required: true`);
        } else if (body) {
            problems.push(`${label}: documents a request body, the route takes none`);
        }
    }
    for (const o of ops.values())
        problems.push(`${o.method.toUpperCase()} ${o.path}: documented, but api/main.c has no such route`);
    return problems;
}

function pathParamProblems(doc) {
    const problems = [];
    const ids = new Set();
    for (const o of operations(doc)) {
        const label = `${o.method.toUpperCase()} ${o.path}`;
        const names = (o.path.match(/\{([^}]*)\}/g) || []).map((s) => s.slice(1, -1));
        const declared = params(doc, o).filter((p) => p.in === 'path');
        for (const n of names) {
            const p = declared.filter((d) => d.name === n);
            if (p.length !== 1)
                problems.push(`${label}: path parameter {${n}} declared ${p.length} times`);
            else if (p[0].required !== true)
                problems.push(`${label}: path parameter {${n}} is not required: true`);
        }
        for (const d of declared)
            if (!names.includes(d.name))
                problems.push(`${label}: path parameter '${d.name}' is not in the path`);
        if (new Set(names).size !== names.length)
            problems.push(`${label}: a path parameter name repeats`);
        if (ids.has(o.op.operationId))
            problems.push(`${label}: operationId ${o.op.operationId} is used twice`);
        ids.add(o.op.operationId);
    }
    return problems;
}

function responseProblems(doc, routes) {
    const problems = [];
    const byKey = new Map(routes.map((r) => [`${r.method} ${r.pattern}`, r]));
    const walk = (label, response) => {
        for (const [type, media] of Object.entries(response.content || {})) {
            if (!/^application\/json\b/.test(type))
                continue;
            const ref = fileRef(media.schema);
            if (!ref)
                problems.push(`${label} ${type}: the schema must be a $ref to a file of schemas/ (./name.json)`);
            else if (!fs.existsSync(path.join(schemasDir, ref.file)))
                problems.push(`${label}: ${ref.file} is not in schemas/`);
        }
    };
    for (const o of operations(doc)) {
        const r = byKey.get(o.key);
        const label = `${o.method.toUpperCase()} ${o.path}`;
        const responses = o.op.responses || {};
        const codes = Object.keys(responses);
        const need = ['503'];
        if (r && r.auth !== 'AUTH_NONE')
            need.push('401');
        if (r && r.auth === 'AUTH_CALLBACK')
            need.push('403');
        if (o.op.requestBody)
            need.push('400', '413', '415');
        if (o.path.includes('{'))
            need.push('404');
        for (const c of need)
            if (!codes.includes(c))
                problems.push(`${label}: no ${c} response`);
        if (!codes.some((c) => /^2\d\d$/.test(c)))
            problems.push(`${label}: no success response`);
        for (const c of codes) {
            const resp = local(doc, responses[c]);
            walk(`${label} ${c}`, resp);
            if (c === '503' && !(resp.headers && resp.headers['Retry-After']))
                problems.push(`${label} 503: no Retry-After header`);
            if (c === '401' && !(resp.headers && resp.headers['WWW-Authenticate']))
                problems.push(`${label} 401: no WWW-Authenticate header`);
            if (c === '204' && resp.content)
                problems.push(`${label} 204: a 204 has no body`);
        }
        if (o.op.requestBody)
            walk(`${label} request`, local(doc, o.op.requestBody));
    }
    for (const [name, resp] of Object.entries((doc.components && doc.components.responses) || {}))
        walk(`components/responses/${name}`, local(doc, resp));
    return problems;
}

function replyProblems(doc, replies) {
    const problems = [];
    const enumCodes = readJson(path.join(schemasDir, 'error.json')).properties.error.properties.code.enum || [];
    for (const [code, statuses] of replies.codes)
        if (!enumCodes.includes(code))
            problems.push(`error code '${code}' (status ${[...statuses].join(', ')}) is answered by api/*.c but not in error.json's enum`);
    for (const code of enumCodes)
        if (!replies.codes.has(code))
            problems.push(`error.json lists code '${code}', which no api_reply_error call in api/*.c answers`);
    const documented = new Set();
    for (const o of operations(doc))
        for (const c of Object.keys(o.op.responses || {}))
            documented.add(Number(c));
    for (const name of Object.keys((doc.components && doc.components.responses) || {}))
        if (name === 'MethodNotAllowed')
            documented.add(405);
    for (const s of replies.statuses)
        if (!documented.has(s))
            problems.push(`api/*.c answers status ${s}, which the document never mentions`);
    return problems;
}

/* Definitions repeated across files because schemas cannot $ref one another. */
function duplicateProblems() {
    const problems = [];
    const load = (f) => readJson(path.join(schemasDir, f));
    const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);
    const pick = (o, drop) => Object.fromEntries(Object.entries(o).filter(([k]) => !drop.includes(k)));

    const cred = load('credential.json');
    const credItem = load('credential_list.json').definitions.credential;
    if (!same(pick(cred.properties, ['used_by']), credItem.properties))
        problems.push('credential_list.json#/definitions/credential/properties differ from credential.json (less used_by)');
    if (!same(cred.required, credItem.required))
        problems.push('credential_list.json#/definitions/credential/required differs from credential.json');

    const mig = load('migration.json');
    const migItem = load('migration_list.json').definitions.migration;
    const top = ['hosts', 'resources'];
    if (!same(pick(mig.properties, top), migItem.properties))
        problems.push('migration_list.json#/definitions/migration/properties differ from migration.json (less hosts, resources)');
    if (!same(mig.required.filter((k) => !top.includes(k)), migItem.required))
        problems.push('migration_list.json#/definitions/migration/required differs from migration.json');

    const create = load('migration_create.json');
    const bare = (o) => pick(o, ['default', 'description']);
    for (const k of ['name', 'cloud', 'region', 'credential'])
        if (!same(bare(create.properties[k]), bare(mig.properties[k])))
            problems.push(`migration.json#/properties/${k} differs from migration_create.json`);
    for (const k of ['name', 'address', 'port', 'credential']) {
        if (!same(bare(create.properties.hosts.items.properties[k]), bare(mig.definitions.host.properties[k])))
            problems.push(`migration.json#/definitions/host/properties/${k} differs from migration_create.json's host`);
    }
    return problems;
}

function newAjv() {
    const ajv = new Ajv({ strict: true, strictTypes: false, strictTuples: false, strictRequired: false, allowUnionTypes: true, allErrors: true });
    addFormats(ajv);
    return ajv;
}

function ajvCompileProblems() {
    const problems = [];
    const ajv = newAjv();
    for (const f of fs.readdirSync(schemasDir).filter((f) => f.endsWith('.json')).sort()) {
        try {
            const s = readJson(path.join(schemasDir, f));
            if (s.$id !== f)
                problems.push(`${f}: $id is ${JSON.stringify(s.$id)}, not the file name`);
            ajv.addSchema(s);
            ajv.getSchema(s.$id || f);
        } catch (e) {
            problems.push(`${f}: ${e.message}`);
        }
    }
    return { problems, ajv };
}

function exampleProblems(doc, ajv) {
    const problems = [];
    let n = 0;
    const media = [];
    for (const o of operations(doc)) {
        const label = `${o.method.toUpperCase()} ${o.path}`;
        if (o.op.requestBody)
            for (const [t, m] of Object.entries(local(doc, o.op.requestBody).content || {}))
                media.push([`${label} request ${t}`, t, m]);
        for (const [c, r] of Object.entries(o.op.responses || {}))
            for (const [t, m] of Object.entries(local(doc, r).content || {}))
                media.push([`${label} ${c} ${t}`, t, m]);
    }
    for (const [name, r] of Object.entries((doc.components && doc.components.responses) || {}))
        for (const [t, m] of Object.entries(local(doc, r).content || {}))
            media.push([`components/responses/${name} ${t}`, t, m]);
    for (const [label, type, m] of media) {
        if (!('example' in m) || !/^application\/json\b/.test(type))
            continue;
        const ref = fileRef(m.schema);
        if (!ref)
            continue;
        const validate = ajv.getSchema(ref.file + ref.pointer);
        if (!validate) {
            problems.push(`${label}: cannot find ${ref.file}${ref.pointer}`);
            continue;
        }
        n++;
        if (!validate(m.example))
            problems.push(`${label}: the example breaks ${ref.file}${ref.pointer}: ${ajv.errorsText(validate.errors)}`);
    }
    if (n < 10)
        problems.push(`only ${n} JSON examples were checked; expected the document's examples to be found`);
    return problems;
}

/* ------------------------------------------------------------------ self-test */

/* A copy of schemas/ in a temporary folder, with openapi.yaml edited by fn. */
function mutatedCopy(fn) {
    const before = fs.readFileSync(docPath, 'utf8');
    const after = fn(before);
    if (after === before)
        throw new Error('the mutation changed nothing (the document changed; update the self-test)');
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'xm-openapi-'));
    for (const f of fs.readdirSync(schemasDir))
        if (fs.statSync(path.join(schemasDir, f)).isFile())
            fs.copyFileSync(path.join(schemasDir, f), path.join(dir, f));
    const target = path.join(dir, path.basename(docPath));
    fs.writeFileSync(target, after);
    return { dir, file: target };
}

async function rejects(fn) {
    const { dir, file } = mutatedCopy(fn);
    try {
        await new SwaggerParser().validate(file);
        return null;
    } catch (e) {
        return e.message.split('\n').slice(0, 2).join(' ');
    } finally {
        fs.rmSync(dir, { recursive: true, force: true });
    }
}

const once = (re, to) => (text) => text.replace(re, to);

async function selfTests(doc, routes) {
    const cases = [
        ['a $ref to a file that does not exist', once("$ref: './health.json'", "$ref: './no-such-file.json'")],
        ['a $ref to a pointer that does not exist', once("$ref: './accepted.json#/definitions/approved'", "$ref: './accepted.json#/definitions/nope'")],
        ['a response code that is not a status code', once("        '204':", "        '2O4':")],
        ['a response without a description', once('          description: deleted\n', '')],
        ['an unknown field in an operation', once('      operationId: healthz\n', '      operationId: healthz\n      responds: always\n')],
        ['a parameter in an unknown place', once('      in: query\n', '      in: body\n')],
        ['an unknown security scheme type', once('      type: http\n', '      type: token\n')],
    ];
    for (const [what, fn] of cases) {
        await check(`self-test: the validator rejects ${what}`, async () => {
            const err = await rejects(fn);
            return err ? [] : ['the broken document validated'];
        });
    }
    /* The drift check on edited copies of the parsed document. */
    const clone = () => JSON.parse(JSON.stringify(doc));
    const drift = [
        ['a route missing from the document', (d) => { delete d.paths['/v1/migrations/{migration}/approve']; }],
        ['a route under another method', (d) => {
            const p = d.paths['/v1/migrations/{migration}/blueprint'];
            p.post = p.put;
            delete p.put;
        }],
        ['an operation the route table lacks', (d) => { d.paths['/v1/extra'] = { get: { operationId: 'extra', responses: {} } }; }],
        ['a wrong request body schema', (d) => {
            d.paths['/v1/credentials'].post.requestBody.content['application/json'].schema.$ref = './facts.json';
        }],
        ['a callback route without its own token', (d) => { delete d.paths['/v1/callbacks/discovery/{migration}'].post.security; }],
    ];
    for (const [what, fn] of drift) {
        await check(`self-test: the route check catches ${what}`, () => {
            const d = clone();
            fn(d);
            return routeProblems(d, routes).length ? [] : ['not caught'];
        });
    }
    await check('self-test: the route table reader refuses an entry it cannot read', () => {
        const text = fs.readFileSync(mainC, 'utf8');
        const odd = text.replace(/\{\s*EVHTTP_REQ_GET\s*,\s*"\/healthz"/, '{EVHTTP_REQ_GET, HEALTHZ_PATH');
        if (odd === text)
            return ['the /healthz entry of api/main.c was not found to mutate; update the self-test'];
        try {
            readRoutes(mainC, odd);
        } catch (e) {
            return [];
        }
        return ['an entry with a macro for its path was skipped silently'];
    });
}

/* ------------------------------------------------------------------ main */

async function main() {
    const shown = path.relative(root, docPath).startsWith('..') ? docPath : path.relative(root, docPath);
    console.log(`openapi: ${shown} with @apidevtools/swagger-parser ` +
                `${require('@apidevtools/swagger-parser/package.json').version}, node ${process.version}`);

    await check('the document is valid OpenAPI 3.1 with every external $ref resolved', async () => {
        const api = await new SwaggerParser().validate(docPath);
        return api.openapi && api.openapi.startsWith('3.1.') ? [] : [`openapi is ${api.openapi}, not 3.1.x`];
    });

    let doc = null;
    let routes = null;
    await check('the document parses', async () => {
        doc = await new SwaggerParser().parse(docPath);
        return [];
    });
    await check('api/main.c route table is readable', () => {
        routes = readRoutes(mainC);
        return [];
    });
    if (!doc || !routes) {
        console.log(`${passed} passed, ${failed} failed`);
        process.exit(1);
    }

    await check(`every route of api/main.c (${routes.length}) is documented with its method, name, ` +
                'auth and request schema, and nothing else is', () => routeProblems(doc, routes));
    await check('path parameters are declared and operationIds unique', () => pathParamProblems(doc));
    await check('every operation lists its error responses, and every JSON body is a schemas/ file',
                () => responseProblems(doc, routes));
    await check('error codes and status codes of api/*.c match error.json and the document',
                () => replyProblems(doc, readReplies(apiDir)));
    await check('repeated definitions agree across schema files', () => duplicateProblems());
    let ajv = null;
    await check('every schemas/*.json compiles under Ajv (draft 7, strict) with $id = file name', () => {
        const r = ajvCompileProblems();
        ajv = r.ajv;
        return r.problems;
    });
    await check('every JSON example in the document validates against its schema', () =>
        ajv ? exampleProblems(doc, ajv) : ['no Ajv instance']);

    await selfTests(doc, routes);

    console.log(`${passed} passed, ${failed} failed`);
    process.exit(failed ? 1 : 0);
}

main().catch((e) => {
    console.log(`not ok - check.js crashed: ${e && e.stack ? e.stack : e}`);
    console.log(`${passed} passed, ${failed + 1} failed`);
    process.exit(1);
});
