// Checks of the deployment files under deploy/: that each one is well-formed for the tool that
// reads it (Kubernetes, Docker, Compose, systemd), and that they agree with each other and with
// the program (config schema, ports, paths, grace periods, uids). No cluster, Docker daemon or
// network is needed; `systemd-analyze verify` runs only where it is installed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse as parseYaml, parseAllDocuments } from 'yaml';
import { configSchema } from '../src/config/schema.js';

// ---------------------------------------------------------------------------------------------
// Locating the repository: compiled, this file is dist/test/deploy.test.js, so the root is
// '../../'; from the sources (test/deploy.test.ts) it is '../'. Take the first ancestor that
// holds both package.json and deploy/.

function findRepoRoot(): string {
  const compiled = fileURLToPath(new URL('../../', import.meta.url));
  const isRoot = (dir: string) =>
    existsSync(path.join(dir, 'package.json')) && existsSync(path.join(dir, 'deploy'));
  if (isRoot(compiled)) return compiled;
  let dir = path.dirname(fileURLToPath(import.meta.url));
  while (!isRoot(dir)) {
    const parent = path.dirname(dir);
    assert.notEqual(parent, dir, `no repository root (package.json + deploy/) above ${import.meta.url}`);
    dir = parent;
  }
  return dir;
}

const root = findRepoRoot();
const deployDir = path.join(root, 'deploy');
const k8sDir = path.join(deployDir, 'kubernetes');
const dockerDir = path.join(deployDir, 'docker');
const unitFile = path.join(deployDir, 'systemd', 'smarthost.service');

// ---------------------------------------------------------------------------------------------
// Typed access to parsed YAML: every step asserts the shape, so a missing field fails with its
// path instead of a TypeError.

type Obj = Record<string, unknown>;

function obj(value: unknown, where: string): Obj {
  assert.ok(
    value !== null && typeof value === 'object' && !Array.isArray(value),
    `${where}: expected a mapping, got ${JSON.stringify(value)}`,
  );
  return value as Obj;
}

function arr(value: unknown, where: string): unknown[] {
  assert.ok(Array.isArray(value), `${where}: expected a list, got ${JSON.stringify(value)}`);
  return value;
}

function str(value: unknown, where: string): string {
  assert.equal(typeof value, 'string', `${where}: expected a string, got ${JSON.stringify(value)}`);
  return value as string;
}

function num(value: unknown, where: string): number {
  assert.equal(typeof value, 'number', `${where}: expected a number, got ${JSON.stringify(value)}`);
  return value as number;
}

/** `a.b.c` of a parsed document, asserting every level is a mapping. */
function at(value: unknown, dotted: string, where: string): unknown {
  let node = value;
  let walked = where;
  for (const key of dotted.split('.')) {
    node = obj(node, walked)[key];
    walked += `.${key}`;
  }
  return node;
}

/** "45s", "1m30s", "500ms" (Go/Compose durations) → milliseconds. */
function goDuration(text: string): number {
  const units: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
  const parts = [...text.matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h)/g)];
  assert.ok(parts.length > 0 && parts.map((p) => p[0]).join('') === text, `not a duration: ${text}`);
  return parts.reduce((sum, p) => sum + Number(p[1]) * (units[p[2] ?? ''] ?? NaN), 0);
}

/** A systemd time span ("45", "45s", "1min 30s") → milliseconds; a bare number is seconds. */
function systemdTimespan(text: string): number {
  if (/^\d+$/.test(text)) return Number(text) * 1000;
  return goDuration(text.replace(/\s+/g, '').replace(/min/g, 'm'));
}

/** Is `file` inside `dir` (both absolute, POSIX)? */
function isUnder(file: string, dir: string): boolean {
  const rel = path.posix.relative(dir, file);
  return rel !== '' && !rel.startsWith('..') && !path.posix.isAbsolute(rel);
}

// ---------------------------------------------------------------------------------------------
// Kubernetes

interface Manifest {
  file: string;
  doc: Obj;
  kind: string;
  name: string;
}

function loadManifests(): { manifests: Manifest[]; kustomization: Obj; files: string[] } {
  const files = readdirSync(k8sDir)
    .filter((f) => /\.ya?ml$/.test(f))
    .sort();
  const manifests: Manifest[] = [];
  let kustomization: Obj | undefined;
  for (const file of files) {
    const docs = parseAllDocuments(readFileSync(path.join(k8sDir, file), 'utf8'));
    assert.ok(Array.isArray(docs), `${file}: not a YAML stream`);
    for (const [index, parsed] of docs.entries()) {
      const where = `${file}[${index}]`;
      assert.deepEqual(
        parsed.errors.map((e) => e.message),
        [],
        `${where}: YAML errors`,
      );
      const doc = parsed.toJS() as unknown;
      if (doc === null) continue; // an empty document (e.g. a trailing ---)
      const o = obj(doc, where);
      const apiVersion = str(o.apiVersion, `${where}.apiVersion`);
      const kind = str(o.kind, `${where}.kind`);
      assert.match(apiVersion, /^([a-z0-9.-]+\/)?v\d+((alpha|beta)\d+)?$/, `${where}.apiVersion`);
      if (kind === 'Kustomization') {
        assert.equal(file, 'kustomization.yaml', 'a Kustomization belongs in kustomization.yaml');
        kustomization = o;
        continue;
      }
      const name = str(at(o, 'metadata.name', where), `${where}.metadata.name`);
      // DNS-1035 label: what Services require, and valid for every other kind here.
      assert.match(name, /^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$/, `${where}.metadata.name`);
      manifests.push({ file, doc: o, kind, name });
    }
  }
  assert.ok(kustomization, 'deploy/kubernetes/kustomization.yaml with kind Kustomization');
  return { manifests, kustomization, files };
}

function one(manifests: Manifest[], kind: string): Manifest {
  const found = manifests.filter((m) => m.kind === kind);
  assert.equal(found.length, 1, `exactly one ${kind} in deploy/kubernetes (found ${found.length})`);
  return found[0] as Manifest;
}

function findByName(manifests: Manifest[], kind: string, name: string): Manifest | undefined {
  return manifests.find((m) => m.kind === kind && m.name === name);
}

test('kubernetes: every manifest parses and the kustomization lists exactly them', () => {
  const { manifests, kustomization, files } = loadManifests();
  const kinds = new Set(manifests.map((m) => m.kind));
  for (const kind of ['StatefulSet', 'Service', 'ConfigMap', 'Secret'])
    assert.ok(kinds.has(kind), `a ${kind}`);
  const keys = manifests.map((m) => `${m.kind}/${m.name}`);
  assert.equal(new Set(keys).size, keys.length, `duplicate objects: ${keys.join(', ')}`);

  const resources = arr(kustomization.resources, 'kustomization.resources').map((r, i) =>
    str(r, `kustomization.resources[${i}]`),
  );
  // Opt-in manifests, kept out of the default kustomization: they need CRDs a plain cluster lacks.
  const optIn = new Set(['servicemonitor.yaml', 'poddisruptionbudget.yaml', 'networkpolicy.yaml']);
  const manifestFiles = files.filter((f) => f !== 'kustomization.yaml' && !optIn.has(f));
  assert.deepEqual([...resources].sort(), manifestFiles, 'kustomization resources = the manifest files');
  const images = arr(kustomization.images ?? [], 'kustomization.images').map((img, i) =>
    str(obj(img, `kustomization.images[${i}]`).name, `kustomization.images[${i}].name`),
  );
  const sts = one(manifests, 'StatefulSet');
  const containers = arr(at(sts.doc, 'spec.template.spec.containers', sts.file), 'containers');
  for (const name of images) {
    assert.ok(
      containers.some((c) => str(obj(c, 'container').image, 'image').split(':')[0] === name),
      `kustomization image "${name}" is used by a container (else the override is a silent no-op)`,
    );
  }
});

test('kubernetes: the StatefulSet is complete, hardened and consistent with its Services, ConfigMap and Secret', () => {
  const { manifests } = loadManifests();
  const sts = one(manifests, 'StatefulSet');
  const w = sts.file;
  assert.equal(sts.doc.apiVersion, 'apps/v1');
  const spec = obj(sts.doc.spec, `${w}.spec`);
  assert.equal(spec.replicas, 1, 'one replica by default');

  // The selector must match the pod template's labels, or the API server rejects the object.
  const matchLabels = obj(at(spec, 'selector.matchLabels', w), `${w}.spec.selector.matchLabels`);
  const templateLabels = obj(at(spec, 'template.metadata.labels', w), `${w}.spec.template.metadata.labels`);
  assert.ok(Object.keys(matchLabels).length > 0, 'selector.matchLabels is not empty');
  for (const [k, v] of Object.entries(matchLabels)) {
    assert.equal(templateLabels[k], v, `template label ${k} matches the selector`);
  }

  // serviceName: the governing Service must exist and be headless.
  const serviceName = str(spec.serviceName, `${w}.spec.serviceName`);
  const governing = findByName(manifests, 'Service', serviceName);
  assert.ok(governing, `Service ${serviceName} (spec.serviceName) is defined`);
  assert.equal(at(governing.doc, 'spec.clusterIP', governing.file), 'None', `${serviceName} is headless`);

  // The spool: a claim template, so queued mail survives the pod.
  const claims = arr(spec.volumeClaimTemplates, `${w}.spec.volumeClaimTemplates`);
  assert.ok(claims.length > 0, 'volumeClaimTemplates');
  const claimNames = claims.map((c, i) => {
    const claim = obj(c, `${w}.volumeClaimTemplates[${i}]`);
    const where = `${w}.volumeClaimTemplates[${i}]`;
    assert.ok(
      arr(at(claim, 'spec.accessModes', where), `${where}.accessModes`).length > 0,
      `${where} accessModes`,
    );
    assert.match(str(at(claim, 'spec.resources.requests.storage', where), 'storage'), /^\d+(Mi|Gi|Ti)$/);
    return str(at(claim, 'metadata.name', where), `${where}.metadata.name`);
  });

  const pod = obj(at(spec, 'template.spec', w), `${w}.template.spec`);
  const podSecurity = obj(pod.securityContext, 'pod securityContext');
  assert.equal(podSecurity.runAsNonRoot, true, 'runAsNonRoot');
  const runAsUser = num(podSecurity.runAsUser, 'runAsUser');
  assert.ok(runAsUser > 0, 'runAsUser is not root');
  const grace = num(pod.terminationGracePeriodSeconds, 'terminationGracePeriodSeconds');

  const volumes = new Map<string, Obj>();
  for (const [i, v] of arr(pod.volumes, `${w}.volumes`).entries()) {
    const volume = obj(v, `${w}.volumes[${i}]`);
    volumes.set(str(volume.name, `${w}.volumes[${i}].name`), volume);
  }
  // Volumes backed by objects of this folder must point at existing ones. smarthost-tls is
  // the one created out of band (documented in secret.yaml and the README).
  const external = new Set(['smarthost-tls']);
  for (const [name, volume] of volumes) {
    if (volume.configMap) {
      const ref = str(obj(volume.configMap, name).name, `${name}.configMap.name`);
      assert.ok(findByName(manifests, 'ConfigMap', ref), `volume ${name}: ConfigMap ${ref} is defined`);
    }
    if (volume.secret) {
      const ref = str(obj(volume.secret, name).secretName, `${name}.secret.secretName`);
      assert.ok(
        findByName(manifests, 'Secret', ref) || external.has(ref),
        `volume ${name}: Secret ${ref} is defined`,
      );
    }
  }

  const containers = arr(pod.containers, `${w}.containers`);
  assert.ok(containers.length > 0, 'containers');
  const c = obj(containers[0], `${w}.containers[0]`);
  const cw = `${w}.containers[0]`;
  str(c.name, `${cw}.name`);
  assert.ok(str(c.image, `${cw}.image`).length > 0, 'image');

  const portsByName = new Map<string, number>();
  for (const [i, p] of arr(c.ports, `${cw}.ports`).entries()) {
    const port = obj(p, `${cw}.ports[${i}]`);
    portsByName.set(str(port.name, `${cw}.ports[${i}].name`), num(port.containerPort, 'containerPort'));
  }
  const containerPorts = new Set(portsByName.values());
  const resolvePort = (value: unknown, where: string): number => {
    if (typeof value === 'number') return value;
    const named = portsByName.get(str(value, where));
    assert.ok(named !== undefined, `${where}: named port ${String(value)} is declared by the container`);
    return named;
  };

  // Security: non-root, read-only root, no capabilities beyond binding low ports when needed.
  const security = obj(c.securityContext, `${cw}.securityContext`);
  assert.equal(security.readOnlyRootFilesystem, true, 'readOnlyRootFilesystem');
  assert.equal(security.allowPrivilegeEscalation, false, 'allowPrivilegeEscalation: false');
  const caps = obj(security.capabilities, 'capabilities');
  assert.ok(arr(caps.drop, 'capabilities.drop').includes('ALL'), 'drops ALL capabilities');
  const added = arr(caps.add ?? [], 'capabilities.add');
  const lowPorts = [...containerPorts].filter((p) => p < 1024);
  assert.ok(
    added.every((cap) => cap === 'NET_BIND_SERVICE'),
    `only NET_BIND_SERVICE may be added: ${added.join()}`,
  );
  if (added.length) assert.ok(lowPorts.length > 0, 'NET_BIND_SERVICE added but no port below 1024');

  // Resources.
  for (const key of ['requests.cpu', 'requests.memory', 'limits.memory']) {
    assert.ok(at(c.resources, key, `${cw}.resources`), `resources.${key}`);
  }

  // Probes on the metrics port: readiness on /readyz (can it deliver), liveness and start-up on
  // /healthz (an unreachable ESP must never restart the pod).
  const probePorts: number[] = [];
  const probePaths: Record<string, string> = {
    startupProbe: '/healthz',
    readinessProbe: '/readyz',
    livenessProbe: '/healthz',
  };
  for (const [probe, expected] of Object.entries(probePaths)) {
    const httpGet = obj(at(c, `${probe}.httpGet`, cw), `${cw}.${probe}.httpGet`);
    assert.equal(httpGet.path, expected, `${probe} path`);
    probePorts.push(resolvePort(httpGet.port, `${cw}.${probe}.httpGet.port`));
  }

  // Mounts, env and args.
  const mounts = new Map<string, string>();
  for (const [i, m] of arr(c.volumeMounts, `${cw}.volumeMounts`).entries()) {
    const mount = obj(m, `${cw}.volumeMounts[${i}]`);
    const name = str(mount.name, `${cw}.volumeMounts[${i}].name`);
    assert.ok(volumes.has(name) || claimNames.includes(name), `volumeMount ${name} has a volume or claim`);
    mounts.set(name, str(mount.mountPath, `${cw}.volumeMounts[${i}].mountPath`));
  }
  const env = new Map<string, string>();
  for (const [i, e] of arr(c.env, `${cw}.env`).entries()) {
    const entry = obj(e, `${cw}.env[${i}]`);
    env.set(str(entry.name, 'env name'), str(entry.value, `env ${String(entry.name)}`));
  }
  const spoolDir = env.get('SMARTHOST_SPOOL_DIR');
  assert.ok(spoolDir, 'SMARTHOST_SPOOL_DIR is set');
  assert.ok(
    claimNames.some((name) => mounts.get(name) === spoolDir),
    `a claim template is mounted at the spool dir ${spoolDir}`,
  );

  // The upstream password file is a key of a Secret mounted where the env var points.
  const passFile = env.get('SMARTHOST_UPSTREAM_PASS_FILE');
  assert.ok(passFile, 'SMARTHOST_UPSTREAM_PASS_FILE is set');
  const passMount = [...mounts].find(([, mountPath]) => path.posix.dirname(passFile) === mountPath);
  assert.ok(passMount, `a volume is mounted at ${path.posix.dirname(passFile)}`);
  const passSecretName = str(
    obj(volumes.get(passMount[0])?.secret, `volume ${passMount[0]} is a Secret`).secretName,
    'secretName',
  );
  const passSecret = findByName(manifests, 'Secret', passSecretName);
  assert.ok(passSecret, `Secret ${passSecretName} is defined`);
  const secretKeys = Object.keys({
    ...(passSecret.doc.data as Obj | undefined),
    ...(passSecret.doc.stringData as Obj | undefined),
  });
  assert.ok(secretKeys.includes(path.posix.basename(passFile)), `Secret ${passSecretName} has the key`);

  // The config: `-c FILE` is a key of the mounted ConfigMap, and it is a valid smarthost config.
  const args = arr(c.args ?? c.command, `${cw}.args`).map((a) => str(a, 'arg'));
  assert.equal(args[0], 'start', 'runs `smarthost start`');
  const configPath = args[args.indexOf('-c') + 1];
  assert.ok(args.includes('-c') && configPath, 'start -c CONFIG');
  const configMount = [...mounts].find(([name]) => volumes.get(name)?.configMap);
  assert.ok(configMount, 'a ConfigMap is mounted');
  assert.equal(path.posix.dirname(configPath), configMount[1], 'the config file is in the ConfigMap mount');
  const configMapName = str(obj(volumes.get(configMount[0])?.configMap, 'configMap').name, 'configMap.name');
  const configMap = findByName(manifests, 'ConfigMap', configMapName);
  assert.ok(configMap, `ConfigMap ${configMapName}`);
  const configText = str(
    obj(configMap.doc.data, 'ConfigMap data')[path.posix.basename(configPath)],
    `ConfigMap ${configMapName} key ${path.posix.basename(configPath)}`,
  );
  const parsed = configSchema.safeParse(parseYaml(configText));
  assert.ok(
    parsed.success,
    `the ConfigMap's smarthost.yml is a valid config:\n${parsed.error?.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('\n')}`,
  );
  const config = parsed.data;

  // Listeners: reachable from outside the pod, on declared container ports.
  for (const listener of config.listen) {
    assert.ok(
      !/^(127\.|::1$|localhost$)/.test(listener.host),
      `listener ${listener.port} is not on loopback`,
    );
    assert.ok(containerPorts.has(listener.port), `listener port ${listener.port} is a containerPort`);
  }
  // Metrics: enabled, not on loopback (the kubelet probes the pod address), on the probed port.
  assert.ok(config.metrics, 'metrics: enabled in the config (the probes need /healthz)');
  assert.ok(!/^(127\.|::1$|localhost$)/.test(config.metrics.host), 'metrics listen beyond loopback');
  for (const port of probePorts) assert.equal(port, config.metrics.port, 'probes hit the metrics port');
  // TLS files come from a mounted volume.
  if (config.tls) {
    for (const file of [config.tls.cert, config.tls.key]) {
      assert.ok(
        [...mounts.values()].some((m) => isUnder(file, m)),
        `${file} lies in a mounted volume`,
      );
    }
  }
  // Termination: preStop delay + the drain must fit before SIGKILL.
  const preStop = at(c, 'lifecycle.preStop.exec.command', cw);
  const preStopSeconds =
    Array.isArray(preStop) && preStop[0] === 'sleep' ? Number(preStop[1]) : preStop === undefined ? 0 : NaN;
  assert.ok(!Number.isNaN(preStopSeconds), 'preStop is absent or `sleep N`');
  assert.ok(
    grace * 1000 > config.shutdown.grace + preStopSeconds * 1000,
    `terminationGracePeriodSeconds (${grace}s) > preStop (${preStopSeconds}s) + shutdown.grace (${config.shutdown.grace / 1000}s)`,
  );

  // Services: ports and selectors that reach this pod.
  const services = manifests.filter((m) => m.kind === 'Service');
  const published = new Set<number>();
  for (const svc of services) {
    const sw = `${svc.file} Service/${svc.name}`;
    const svcSpec = obj(svc.doc.spec, `${sw}.spec`);
    const selector = obj(svcSpec.selector, `${sw}.spec.selector`);
    assert.ok(Object.keys(selector).length > 0, `${sw}: selector`);
    for (const [k, v] of Object.entries(selector)) assert.equal(templateLabels[k], v, `${sw}: selector ${k}`);
    const ports = arr(svcSpec.ports, `${sw}.spec.ports`);
    assert.ok(ports.length > 0, `${sw}: ports`);
    const targets: number[] = [];
    for (const [i, p] of ports.entries()) {
      const port = obj(p, `${sw}.ports[${i}]`);
      const number = num(port.port, `${sw}.ports[${i}].port`);
      assert.ok(Number.isInteger(number) && number >= 1 && number <= 65535, `${sw}.ports[${i}].port`);
      if (ports.length > 1) str(port.name, `${sw}.ports[${i}].name (required with several ports)`);
      const target = resolvePort(port.targetPort ?? number, `${sw}.ports[${i}].targetPort`);
      assert.ok(containerPorts.has(target), `${sw}: targetPort ${target} is a containerPort`);
      targets.push(target);
      if (svcSpec.type === 'LoadBalancer' || svcSpec.type === 'NodePort') published.add(number);
    }
    // The allowlist needs the client's real address: Local traffic policy, or PROXY protocol on
    // every listener this Service reaches.
    if (svcSpec.type === 'LoadBalancer' || svcSpec.type === 'NodePort') {
      const smtpListeners = config.listen.filter((l) => targets.includes(l.port));
      assert.ok(
        svcSpec.externalTrafficPolicy === 'Local' || smtpListeners.every((l) => l.proxyProtocol),
        `${sw}: externalTrafficPolicy: Local (or proxyProtocol on its listeners)`,
      );
    }
  }
  for (const port of [25, 587, 465]) assert.ok(published.has(port), `SMTP port ${port} is published`);
  assert.ok(!published.has(config.metrics.port), 'metrics are not published outside the cluster');
});

// ---------------------------------------------------------------------------------------------
// Dockerfile

interface Instruction {
  keyword: string;
  args: string;
}

function parseDockerfile(text: string): Instruction[] {
  const instructions: Instruction[] = [];
  let pending = '';
  for (const line of text.split('\n')) {
    if (/^\s*#/.test(line)) continue; // comments, also inside continued instructions
    if (/\\\s*$/.test(line)) {
      pending += line.replace(/\\\s*$/, ' ');
      continue;
    }
    const full = (pending + line).trim();
    pending = '';
    if (!full) continue;
    const match = /^(\w+)\s+(.*)$/s.exec(full);
    assert.ok(match, `Dockerfile: cannot parse "${full}"`);
    instructions.push({
      keyword: (match[1] ?? '').toUpperCase(),
      args: (match[2] ?? '').replace(/\s+/g, ' '),
    });
  }
  assert.equal(pending, '', 'Dockerfile ends inside a continued line');
  return instructions;
}

function dockerfileStages(): { name?: string; from: string; body: Instruction[] }[] {
  const instructions = parseDockerfile(readFileSync(path.join(dockerDir, 'Dockerfile'), 'utf8'));
  const stages: { name?: string; from: string; body: Instruction[] }[] = [];
  for (const ins of instructions) {
    if (ins.keyword === 'FROM') {
      const m = /^(\S+)(?:\s+AS\s+(\S+))?$/i.exec(ins.args);
      assert.ok(m, `FROM ${ins.args}`);
      stages.push({ from: m[1] ?? '', name: m[2], body: [] });
    } else if (stages.length) {
      stages.at(-1)?.body.push(ins);
    } else {
      assert.equal(ins.keyword, 'ARG', 'only ARG may come before the first FROM');
    }
  }
  return stages;
}

function dockerfileEnv(body: Instruction[]): Map<string, string> {
  const env = new Map<string, string>();
  for (const ins of body.filter((i) => i.keyword === 'ENV')) {
    for (const m of ins.args.matchAll(/(\w+)=("[^"]*"|\S+)/g))
      env.set(m[1] ?? '', (m[2] ?? '').replace(/^"|"$/g, ''));
  }
  return env;
}

test('docker: multi-stage build, non-root runtime with only the runtime files, healthcheck, volume', () => {
  const stages = dockerfileStages();
  assert.ok(stages.length >= 2, 'multi-stage: at least two FROM');
  const build = stages[0];
  const runtime = stages.at(-1);
  assert.ok(build?.name && runtime, 'the build stage is named (FROM ... AS build)');
  const runs = build.body
    .filter((i) => i.keyword === 'RUN')
    .map((i) => i.args)
    .join(' && ');
  for (const step of ['npm ci', 'npm run build', 'npm prune --omit=dev']) {
    assert.ok(runs.includes(step), `build stage runs ${step}`);
  }
  assert.ok(
    runs.indexOf('npm ci') < runs.indexOf('npm run build') &&
      runs.indexOf('npm run build') < runs.indexOf('npm prune'),
    'npm ci, then build, then prune',
  );

  // What the build stage copies from the context exists, and the .dockerignore lets it through.
  const ignore = readFileSync(path.join(dockerDir, 'Dockerfile.dockerignore'), 'utf8')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'));
  assert.equal(ignore[0], '*', 'Dockerfile.dockerignore is an allow-list (starts with *)');
  const allowed = new Set(ignore.filter((l) => l.startsWith('!')).map((l) => l.slice(1).replace(/\/$/, '')));
  for (const ins of build.body.filter((i) => i.keyword === 'COPY' && !i.args.startsWith('--from'))) {
    const parts = ins.args.split(' ').filter((p) => !p.startsWith('--'));
    for (const source of parts.slice(0, -1)) {
      const clean = source.replace(/^\.\//, '').replace(/\/$/, '');
      assert.ok(existsSync(path.join(root, clean)), `COPY ${clean}: exists in the repository`);
      assert.ok(allowed.has(clean), `COPY ${clean}: not excluded by Dockerfile.dockerignore`);
    }
  }

  // Runtime: only bin, dist, node_modules, package.json, all from the build stage.
  const copies = runtime.body.filter((i) => i.keyword === 'COPY' || i.keyword === 'ADD');
  const copied = copies.map((ins) => {
    assert.equal(ins.keyword, 'COPY', 'no ADD in the runtime stage');
    assert.match(
      ins.args,
      new RegExp(`^--from=${build.name}\\s`),
      `runtime COPY comes from the build stage: ${ins.args}`,
    );
    const parts = ins.args.split(' ').filter((p) => !p.startsWith('--'));
    return path.posix.basename((parts[0] ?? '').replace(/\/$/, ''));
  });
  assert.deepEqual([...copied].sort(), ['bin', 'dist', 'node_modules', 'package.json']);
  assert.equal(runtime.from, build.from, 'runtime stage on the same base image as the build stage');

  const last = (keyword: string) => runtime.body.filter((i) => i.keyword === keyword).at(-1)?.args;
  const user = last('USER');
  assert.ok(user, 'USER in the runtime stage');
  assert.ok(!/^(root|0)(:|$)/.test(user), `USER ${user} is not root`);

  const env = dockerfileEnv(runtime.body);
  const spool = env.get('SMARTHOST_SPOOL_DIR');
  assert.ok(spool, 'ENV SMARTHOST_SPOOL_DIR');
  assert.ok(last('VOLUME')?.includes(spool), `VOLUME ${spool}`);
  const exposed = new Set((last('EXPOSE') ?? '').split(' ').map((p) => Number(p.replace(/\/tcp$/, ''))));
  for (const port of [25, 587, 465, 2525, 9325]) assert.ok(exposed.has(port), `EXPOSE ${port}`);

  const healthcheck = last('HEALTHCHECK');
  assert.ok(healthcheck, 'HEALTHCHECK');
  assert.match(healthcheck, /CMD .*node.*\/healthz/, 'HEALTHCHECK calls /healthz with node');
  assert.ok(healthcheck.includes(':9325/'), 'HEALTHCHECK on the metrics port');
  assert.equal(last('STOPSIGNAL'), 'SIGTERM');
  // Exec (JSON) form, so node is PID 1 and receives SIGTERM/SIGHUP itself (not a shell).
  const argv = ['ENTRYPOINT', 'CMD'].flatMap((k) => {
    const value = last(k) ?? '[]';
    assert.ok(value.startsWith('['), `${k} in exec (JSON) form, not shell form: ${value}`);
    return JSON.parse(value) as string[];
  });
  assert.equal(argv[0], 'node');
  assert.match(argv[1] ?? '', /\/bin\/smarthost\.js$/);
  assert.deepEqual(argv.slice(2), ['start', '-c', '/etc/smarthost/smarthost.yml']);

  // The Kubernetes pod runs as the image's user, so volume ownership matches.
  const uid = Number(user.split(':')[0]);
  assert.ok(
    Number.isInteger(uid),
    'USER is numeric (Kubernetes can only check runAsNonRoot against a number)',
  );
  const { manifests } = loadManifests();
  const sts = one(manifests, 'StatefulSet');
  assert.equal(at(sts.doc, 'spec.template.spec.securityContext.runAsUser', sts.file), uid, 'same uid in k8s');
  const k8sEnv = arr(at(sts.doc, 'spec.template.spec.containers', sts.file), 'containers')
    .map((c) => obj(c, 'container').env)
    .flat()
    .map((e) => obj(e, 'env'));
  assert.equal(k8sEnv.find((e) => e.name === 'SMARTHOST_SPOOL_DIR')?.value, spool, 'same spool dir in k8s');
});

test('docker: compose.yaml builds from the repo root, keeps the spool and reads the password from a secret', () => {
  const composeText = readFileSync(path.join(dockerDir, 'compose.yaml'), 'utf8');
  const docs = parseAllDocuments(composeText);
  assert.ok(Array.isArray(docs) && docs.length === 1, 'compose.yaml is one YAML document');
  assert.deepEqual(
    docs[0]?.errors.map((e) => e.message),
    [],
  );
  const compose = obj(docs[0]?.toJS(), 'compose.yaml');
  const service = obj(at(compose, 'services.smarthost', 'compose'), 'services.smarthost');

  const build = obj(service.build, 'build');
  const context = path.resolve(dockerDir, str(build.context, 'build.context'));
  assert.equal(context, path.resolve(root), 'build context is the repository root');
  assert.ok(
    existsSync(path.join(context, str(build.dockerfile, 'build.dockerfile'))),
    'build.dockerfile exists',
  );

  const runtimeEnv = dockerfileEnv(dockerfileStages().at(-1)?.body ?? []);
  const spool = runtimeEnv.get('SMARTHOST_SPOOL_DIR');
  const mounts = arr(service.volumes, 'volumes').map((v, i) => obj(v, `volumes[${i}]`));
  const spoolMount = mounts.find((m) => m.target === spool);
  assert.ok(spoolMount, `a volume at the spool dir ${spool}`);
  assert.equal(spoolMount.type, 'volume', 'the spool is a named volume');
  assert.ok(
    Object.hasOwn(obj(compose.volumes, 'top-level volumes'), str(spoolMount.source, 'spool source')),
    'spool volume is declared',
  );
  const configMount = mounts.find((m) => m.target === '/etc/smarthost');
  assert.ok(configMount, 'config mounted at /etc/smarthost');
  assert.equal(configMount.read_only, true, 'config is read-only');

  const env = obj(service.environment, 'environment');
  const passFile = str(env.SMARTHOST_UPSTREAM_PASS_FILE, 'SMARTHOST_UPSTREAM_PASS_FILE');
  assert.equal(path.posix.dirname(passFile), '/run/secrets', 'password from a Docker secret');
  const secretName = path.posix.basename(passFile);
  assert.ok(
    arr(service.secrets, 'service.secrets').includes(secretName),
    `service uses secret ${secretName}`,
  );
  assert.ok(obj(compose.secrets, 'top-level secrets')[secretName], `secret ${secretName} is declared`);
  assert.equal(env.SMARTHOST_UPSTREAM_PASS, undefined, 'no password in the environment');

  const ports = arr(service.ports, 'ports').map((p) => String(p));
  for (const port of [25, 587, 465]) {
    assert.ok(
      ports.some((p) => p.split(':').at(-2) === String(port)),
      `host port ${port} is published`,
    );
  }
  const metrics = ports.find((p) => p.endsWith(':9325'));
  assert.ok(!metrics || metrics.startsWith('127.0.0.1:'), 'metrics published on loopback only');

  const healthTest = arr(at(service, 'healthcheck.test', 'compose'), 'healthcheck.test').map(String);
  // Liveness: a healthcheck on /readyz would mark the container unhealthy (and get it
  // restarted by autoheal) whenever the ESP is unreachable.
  assert.ok(healthTest.join(' ').includes('/healthz'), 'healthcheck calls /healthz');
  assert.ok(!healthTest.join(' ').includes('/readyz'), 'healthcheck is liveness, not /readyz');
  assert.ok(
    goDuration(str(service.stop_grace_period, 'stop_grace_period')) > 30_000,
    'stop grace > 30s drain',
  );
  assert.equal(service.stop_signal ?? 'SIGTERM', 'SIGTERM');
});

// ---------------------------------------------------------------------------------------------
// systemd

type Sections = Map<string, Map<string, string[]>>;

function parseUnit(text: string): Sections {
  const sections: Sections = new Map();
  let current: Map<string, string[]> | undefined;
  let pending = '';
  for (const raw of text.split('\n')) {
    if (!pending && /^\s*[#;]/.test(raw)) continue;
    const line = pending + raw;
    if (/\\$/.test(line)) {
      pending = line.slice(0, -1) + ' ';
      continue;
    }
    pending = '';
    const trimmed = line.trim();
    if (!trimmed) continue;
    const header = /^\[([A-Za-z]+)\]$/.exec(trimmed);
    if (header) {
      assert.ok(!sections.has(header[1] ?? ''), `section [${header[1]}] appears once`);
      current = new Map();
      sections.set(header[1] ?? '', current);
      continue;
    }
    const kv = /^([A-Za-z][A-Za-z0-9]*)\s*=\s*(.*)$/.exec(trimmed);
    assert.ok(kv && current, `unit: cannot parse "${trimmed}"`);
    const [, key = '', value = ''] = kv;
    current.set(key, [...(current.get(key) ?? []), value]);
  }
  return sections;
}

test('systemd: the unit has the required keys, a tight sandbox and no MemoryDenyWriteExecute', () => {
  const unit = parseUnit(readFileSync(unitFile, 'utf8'));
  assert.deepEqual([...unit.keys()], ['Unit', 'Service', 'Install']);
  const service = unit.get('Service') as Map<string, string[]>;
  const get = (key: string): string | undefined => service.get(key)?.at(-1);

  const expected: Record<string, string> = {
    Type: 'simple',
    User: 'smarthost',
    Group: 'smarthost',
    StateDirectory: 'smarthost',
    ConfigurationDirectory: 'smarthost',
    AmbientCapabilities: 'CAP_NET_BIND_SERVICE',
    CapabilityBoundingSet: 'CAP_NET_BIND_SERVICE',
    NoNewPrivileges: 'true',
    ProtectSystem: 'strict',
    ProtectHome: 'true',
    PrivateTmp: 'true',
    PrivateDevices: 'true',
    ProtectKernelTunables: 'true',
    ProtectKernelModules: 'true',
    ProtectKernelLogs: 'true',
    ProtectControlGroups: 'true',
    RestrictNamespaces: 'true',
    LockPersonality: 'true',
    SystemCallArchitectures: 'native',
    UMask: '0027',
    KillSignal: 'SIGTERM',
    Restart: 'on-failure',
    ExecReload: '/bin/kill -HUP $MAINPID',
  };
  for (const [key, value] of Object.entries(expected)) assert.equal(get(key), value, `[Service] ${key}=`);
  assert.deepEqual(
    (get('RestrictAddressFamilies') ?? '').split(/\s+/).sort(),
    ['AF_INET', 'AF_INET6', 'AF_UNIX'],
    'RestrictAddressFamilies',
  );
  // V8's JIT needs writable+executable memory: with this set, node aborts at start.
  assert.ok(
    !/^(true|yes|1|on)$/i.test(get('MemoryDenyWriteExecute') ?? 'false'),
    'MemoryDenyWriteExecute is off',
  );
  // A dynamic uid would orphan the spool's files.
  assert.ok(!/^(true|yes|1|on)$/i.test(get('DynamicUser') ?? 'false'), 'no DynamicUser');

  const execStart = get('ExecStart') ?? '';
  assert.match(
    execStart,
    /^\/\S*node \/opt\/smarthost\/bin\/smarthost\.js start -c \/etc\/smarthost\/smarthost\.yml$/,
  );
  const environment = (service.get('Environment') ?? []).flatMap((v) => v.split(/\s+/));
  assert.ok(
    environment.includes(`SMARTHOST_SPOOL_DIR=/var/lib/${get('StateDirectory')}`),
    'SMARTHOST_SPOOL_DIR is the StateDirectory',
  );
  // The stop timeout must outlast the drain (shutdown.grace defaults to 30s), or SIGKILL cuts it.
  const defaultGrace = configSchema.parse({}).shutdown.grace;
  const stopTimeout = systemdTimespan(get('TimeoutStopSec') ?? '');
  assert.ok(
    stopTimeout > defaultGrace,
    `TimeoutStopSec (${stopTimeout}ms) > shutdown.grace (${defaultGrace}ms)`,
  );
  assert.equal(unit.get('Install')?.get('WantedBy')?.at(-1), 'multi-user.target');
});

function which(command: string): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    const candidate = path.join(dir, command);
    try {
      if (statSync(candidate).isFile()) return candidate;
    } catch {
      // not in this directory
    }
  }
  return undefined;
}

test('systemd: systemd-analyze verify accepts the unit', (t) => {
  const analyze = which('systemd-analyze');
  if (!analyze) {
    t.skip('systemd-analyze is not installed');
    return;
  }
  // verify checks that ExecStart's binary exists: point it at this node and this checkout.
  const dir = mkdtempSync(path.join(tmpdir(), 'smarthost-unit-'));
  try {
    const file = path.join(dir, 'smarthost.service');
    const original = readFileSync(unitFile, 'utf8');
    const script = path.join(root, 'bin', 'smarthost.js');
    const copy = original.replace(/^ExecStart=\S+ \S+/m, `ExecStart=${process.execPath} ${script}`);
    assert.notEqual(copy, original, 'ExecStart was rewritten');
    writeFileSync(file, copy);
    const result = spawnSync(analyze, ['verify', file], { encoding: 'utf8', timeout: 30_000 });
    assert.equal(result.error, undefined, String(result.error));
    // verify exits 0 on unknown keys and bad values and only warns: any line about our file fails.
    const aboutUnit = `${result.stdout}\n${result.stderr}`
      .split('\n')
      .filter((line) => line.includes(file) || line.includes('smarthost.service'));
    assert.deepEqual(aboutUnit, [], 'no warnings about the unit');
    assert.equal(result.status, 0, `systemd-analyze verify failed:\n${result.stderr}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('kubernetes/cluster: two replicas, the base config plus cluster: pointing at the Redis Service', () => {
  const dir = path.join(k8sDir, 'cluster');
  const kustomization = obj(
    parseYaml(readFileSync(path.join(dir, 'kustomization.yaml'), 'utf8')),
    'kustomization',
  );
  const resources = arr(kustomization.resources, 'resources').map((r) => str(r, 'resource'));
  assert.ok(resources.includes('..'), 'builds on the base');
  for (const file of resources.filter((r) => r !== '..')) assert.ok(existsSync(path.join(dir, file)), file);
  const patches = JSON.stringify(kustomization.patches);
  assert.match(patches, /\/spec\/replicas/);
  assert.match(patches, /value: 2/);
  // The overlay's config: the base's, unchanged, plus `cluster:`, and valid for the schema.
  const configMapText = (file: string) => {
    const doc = obj(parseYaml(readFileSync(file, 'utf8')), file);
    return str(obj(doc.data, `${file}.data`)['smarthost.yml'], `${file} smarthost.yml`);
  };
  const base = parseYaml(configMapText(path.join(k8sDir, 'configmap.yaml'))) as Obj;
  const overlay = parseYaml(configMapText(path.join(dir, 'cluster-config.yaml'))) as Obj;
  const { cluster, ...rest } = overlay;
  assert.deepEqual(rest, base, 'cluster-config.yaml repeats configmap.yaml (keep them in step)');
  const parsed = configSchema.safeParse(overlay);
  assert.ok(parsed.success, JSON.stringify(parsed.error?.issues));
  const redisUrl = new URL(str(obj(cluster, 'cluster').redis, 'cluster.redis'));
  const services = parseAllDocuments(readFileSync(path.join(dir, 'redis.yaml'), 'utf8'))
    .map((d) => d.toJS() as Obj)
    .filter((d) => d.kind === 'Service');
  const service = services.find((s) => at(s, 'metadata.name', 'Service') === redisUrl.hostname);
  assert.ok(service, `a Service named ${redisUrl.hostname} in redis.yaml`);
  const ports = arr(at(service, 'spec.ports', 'Service'), 'ports').map((p) =>
    num(obj(p, 'port').port, 'port'),
  );
  assert.ok(ports.includes(Number(redisUrl.port || 6379)), 'the Service serves the port of cluster.redis');
});
