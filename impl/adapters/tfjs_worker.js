// TF.js Adam driven over stdin/stdout by impl/adapters/tfjs.py.
//
// Protocol: JSON lines. Each request is one JSON object on one line; each gets exactly one
// response line: {"ok": true, ...} or {"ok": false, "error": "..."}. Float32 arrays travel
// as base64 of their little-endian IEEE-754 bytes (never decimal text), so every value
// crosses the pipe bit for bit. Requests:
//
//   {"op": "init", "lr": x, "beta1": x, "beta2": x, "epsilon": x, "shapes": [[5], [2, 3]]}
//       -> {"ok": true, "core": "4.22.0", "backend": "cpu"}
//   {"op": "set_state", "params": [b64], "m": [b64], "v": [b64], "step": n,
//    "beta1_power": b64, "beta2_power": b64}            (powers: 0-d float32, beta^step)
//   {"op": "get_state"} -> {"ok": true, "params": [...], "m": [...], "v": [...], "step": n,
//                           "beta1_power": b64, "beta2_power": b64,
//                           "acc_beta1": b64, "acc_beta2": b64}
//   {"op": "step", "grads": [b64], "lr": x (optional: sets optimizer.learningRate first)}
//   {"op": "close"} -> responds, then exits.
//
// Bias-correction powers. AdamOptimizer keeps private scalar variables accBeta1/accBeta2:
// the constructor sets them to beta (= beta^1), each applyGradients divides by
// (1 - accBeta) and only afterwards does accBeta <- accBeta * beta (float32 mul). So
// before step t, accBeta holds the power step t will use (~beta^t); after it, beta^(t+1).
// adamspec's State.extras["beta1_power"] is the power step t *used* (beta^t after t steps,
// 1 at step 0), which cannot be recovered from accBeta by an exact division, so this
// worker remembers the accBeta value each step consumed (usedBeta1/usedBeta2).
// set_state(power p) makes the next step see accBeta = mul(p, beta), the very float32
// product TF.js itself would have formed after a step that used p. (setWeights() on its
// own resets accBeta to pow(beta, iterations + 1); we overwrite that.)
'use strict';

const os = require('os');
const readline = require('readline');
const tf = require('@tensorflow/tfjs-core');
require('@tensorflow/tfjs-backend-cpu');

if (os.endianness() !== 'LE') {
  throw new Error('tfjs_worker.js assumes a little-endian host');
}

let optimizer = null;
let variables = [];  // tf.Variable per tensor, named adamspec/p<i> (never integer-like keys)
let hyper = null;
let usedBeta1 = 1;   // the accBeta1 value the last step divided by (1 at step 0)
let usedBeta2 = 1;

function decode(b64, shape) {
  const buf = Buffer.from(b64, 'base64');
  const size = shape.reduce((a, b) => a * b, 1);
  if (buf.length !== 4 * size) {
    throw new Error(`expected ${4 * size} bytes for shape [${shape}], got ${buf.length}`);
  }
  const copy = new Uint8Array(buf);  // an aligned copy
  return tf.tensor(new Float32Array(copy.buffer), shape, 'float32');
}

function encode(values) {
  const arr = values instanceof Float32Array ? values : Float32Array.from(values);
  return Buffer.from(arr.buffer, arr.byteOffset, arr.byteLength).toString('base64');
}

function scalarOf(b64) {
  const t = decode(b64, []);
  const x = t.dataSync()[0];
  t.dispose();
  return x;
}

function need() {
  if (optimizer === null) throw new Error('init must come first');
}

function setAccBetas(p1, p2) {
  // accBeta <- p * beta exactly as applyGradients forms it: mul(float32 tensor, JS number).
  usedBeta1 = p1;
  usedBeta2 = p2;
  tf.tidy(() => {
    optimizer.accBeta1.assign(tf.mul(tf.scalar(p1, 'float32'), hyper.beta1));
    optimizer.accBeta2.assign(tf.mul(tf.scalar(p2, 'float32'), hyper.beta2));
  });
}

async function setState(req) {
  need();
  const n = variables.length;
  for (const key of ['params', 'm', 'v']) {
    if (!Array.isArray(req[key]) || req[key].length !== n) {
      throw new Error(`set_state: ${key} must list ${n} tensors`);
    }
  }
  variables.forEach((x, i) => {
    const t = decode(req.params[i], x.shape);
    x.assign(t);
    t.dispose();
  });
  // setWeights() builds fresh moment variables; dispose the ones it replaces.
  for (const slot of [...optimizer.accumulatedFirstMoment, ...optimizer.accumulatedSecondMoment]) {
    if (slot != null) slot.variable.dispose();
  }
  const weights = [{name: 'iter', tensor: tf.scalar(req.step, 'int32')}];
  variables.forEach((x, i) => weights.push({name: `${x.name}/m`, tensor: decode(req.m[i], x.shape)}));
  variables.forEach((x, i) => weights.push({name: `${x.name}/v`, tensor: decode(req.v[i], x.shape)}));
  await optimizer.setWeights(weights);
  weights.forEach((w) => w.tensor.dispose());
  setAccBetas(scalarOf(req.beta1_power), scalarOf(req.beta2_power));
  return {};
}

async function getState() {
  need();
  const weights = await optimizer.getWeights();
  const n = variables.length;
  if (weights.length !== 1 + 2 * n) {
    throw new Error(`getWeights returned ${weights.length} tensors, expected ${1 + 2 * n}`);
  }
  const step = (await weights[0].tensor.data())[0];
  weights[0].tensor.dispose();  // saveIterations() makes a new scalar each call
  const out = {
    params: variables.map((x) => encode(x.dataSync())),
    m: weights.slice(1, 1 + n).map((w) => encode(w.tensor.dataSync())),
    v: weights.slice(1 + n).map((w) => encode(w.tensor.dataSync())),
    step,
    beta1_power: encode([usedBeta1]),
    beta2_power: encode([usedBeta2]),
    acc_beta1: encode(optimizer.accBeta1.dataSync()),
    acc_beta2: encode(optimizer.accBeta2.dataSync()),
  };
  return out;
}

function step(req) {
  need();
  if (!Array.isArray(req.grads) || req.grads.length !== variables.length) {
    throw new Error(`step: grads must list ${variables.length} tensors`);
  }
  if (req.lr !== undefined && req.lr !== null) optimizer.learningRate = req.lr;
  const grads = {};
  variables.forEach((x, i) => { grads[x.name] = decode(req.grads[i], x.shape); });
  const b1 = optimizer.accBeta1.dataSync()[0];
  const b2 = optimizer.accBeta2.dataSync()[0];
  optimizer.applyGradients(grads);
  Object.values(grads).forEach((g) => g.dispose());
  usedBeta1 = b1;
  usedBeta2 = b2;
  return {};
}

async function init(req) {
  if (optimizer !== null) throw new Error('init sent twice');
  await tf.setBackend('cpu');
  await tf.ready();
  hyper = {beta1: req.beta1, beta2: req.beta2};
  optimizer = tf.train.adam(req.lr, req.beta1, req.beta2, req.epsilon);
  variables = req.shapes.map((shape, i) => tf.variable(tf.zeros(shape, 'float32'), true, `adamspec/p${i}`));
  // Zero moments at step 0 (as a fresh optimizer would create on its first step).
  const zeros = variables.map((x) => encode(new Float32Array(x.size)));
  await setState({
    params: zeros, m: zeros, v: zeros, step: 0,
    beta1_power: encode([1]), beta2_power: encode([1]),
  });
  return {core: tf.version_core, backend: tf.getBackend()};
}

async function handle(req) {
  switch (req.op) {
    case 'init': return init(req);
    case 'set_state': return setState(req);
    case 'get_state': return getState();
    case 'step': return step(req);
    case 'close': return {};
    default: throw new Error(`unknown op ${JSON.stringify(req.op)}`);
  }
}

const rl = readline.createInterface({input: process.stdin, terminal: false});
let queue = Promise.resolve();
rl.on('line', (line) => {
  queue = queue.then(async () => {
    let req = null;
    let resp;
    try {
      req = JSON.parse(line);
      resp = {ok: true, ...(await handle(req))};
    } catch (e) {
      resp = {ok: false, error: String(e && e.stack ? e.stack : e)};
    }
    process.stdout.write(JSON.stringify(resp) + '\n');
    if (req && req.op === 'close') process.exit(0);
  });
});
rl.on('close', () => { queue.then(() => process.exit(0)); });
