// redis-breaker console: renders /api/breakers, follows /api/events, sends the operator's
// writes. Breaker names and reasons are attacker-controlled text: they are only ever set as
// textContent, never parsed as HTML, and URL-encoded in paths.
'use strict';

const $ = (id) => document.getElementById(id);
let info = { read_only: true, auth_reads: false, prefix: '' };
let last = [];
let flash = new Set();
let reloadTimer = null;

function headers() {
  const token = $('token').value.trim();
  return token ? { Authorization: 'Bearer ' + token } : {};
}

// kind: true (an error) or 'warning'; either stays until a write succeeds cleanly.
function notice(text, kind) {
  const n = $('notice');
  n.textContent = text || '';
  n.hidden = !text;
  n.classList.toggle('error', kind === true);
  n.classList.toggle('warning', kind === 'warning');
}

function conn(text, kind) {
  const c = $('conn');
  c.textContent = text;
  c.className = 'badge' + (kind ? ' ' + kind : '');
}

function seconds(ms) {
  if (ms === null || ms === undefined) return '-';
  return (ms / 1000).toFixed(1) + 's';
}

function cell(row, text, cls) {
  const td = document.createElement('td');
  td.textContent = text;
  if (cls) td.className = cls;
  row.appendChild(td);
  return td;
}

function button(label, cls, onClick) {
  const b = document.createElement('button');
  b.type = 'button';
  b.textContent = label;
  if (cls) b.className = cls;
  b.disabled = info.read_only;
  b.title = info.read_only ? 'read-only: the console was started without a token' : '';
  b.addEventListener('click', onClick);
  return b;
}

async function write(name, action, duration, note) {
  const query = new URLSearchParams();
  if (duration) query.set('for', duration);
  if (note) query.set('note', note);
  let url = '/api/breakers/' + encodeURIComponent(name) + '/' + action;
  if (query.toString()) url += '?' + query.toString();
  const r = await fetch(url, { method: 'POST', headers: headers() });
  if (!r.ok) {
    const body = await r.json().catch(() => ({ error: r.statusText }));
    notice(action + ' ' + name + ': ' + (body.error || r.status), true);
    return;
  }
  // Written, but Redis would not publish its event (before 7.0): say so until the next write.
  const body = await r.json().catch(() => ({}));
  if (body.warning) notice(action + ' ' + name + ' was written, but: ' + body.warning, 'warning');
  else notice('');
  await load();
}

function actions(row, b) {
  const td = cell(row, '', 'actions');
  td.appendChild(button('Force open…', 'danger', () => {
    const d = prompt('Force "' + b.name + '" open for the whole fleet.\nFor how long (e.g. 30s, 5m)? Empty: until reset.', '5m');
    if (d === null) return;
    const note = prompt('A note for the history (optional), e.g. "deploy 4711 rollback":', '');
    if (note === null) return;
    if (confirm('Force "' + b.name + '" open' + (d ? ' for ' + d : ' until reset') + '? Every process will reject its calls.')) write(b.name, 'open', d, note);
  }));
  td.appendChild(button('Force close…', '', () => {
    const d = prompt('Force "' + b.name + '" closed (it never trips).\nFor how long? Empty: until reset.', '5m');
    if (d === null) return;
    const note = prompt('A note for the history (optional):', '');
    if (note === null) return;
    if (confirm('Force "' + b.name + '" closed' + (d ? ' for ' + d : ' until reset') + '?')) write(b.name, 'close', d, note);
  }));
  td.appendChild(button('Reset', '', () => {
    if (confirm('Reset "' + b.name + '" to closed (failures, trips and probes cleared)?')) write(b.name, 'reset');
  }));
  const h = document.createElement('button');
  h.type = 'button';
  h.textContent = 'History';
  h.addEventListener('click', () => showHistory(b.name));
  td.appendChild(h);
}

const SVG = 'http://www.w3.org/2000/svg';

function svgEl(kind, attrs) {
  const el = document.createElementNS(SVG, kind);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  return el;
}

// The last day as a bar: one segment per state, coloured as the table's badges.
function drawTimeline(history) {
  const now = Date.now();
  const from = now - 24 * 3600 * 1000;
  const svg = svgEl('svg', { viewBox: '0 0 1000 30', preserveAspectRatio: 'none', class: 'timeline', role: 'img' });
  const title = svgEl('title', {});
  title.textContent = 'states over the last day (left: 24h ago, right: now)';
  svg.appendChild(title);
  const entries = history.slice().reverse().filter((e) => e.at_ms >= from);
  const x = (t) => ((Math.max(t, from) - from) / (now - from)) * 1000;
  let state = entries.length ? entries[0].from : (history.length ? history[0].to : 'closed');
  let start = from;
  for (const e of entries.concat([{ at_ms: now, to: null }])) {
    // A state held for seconds still shows: at least 3 units (of 1000) wide, drawn over its neighbour.
    const width = Math.max(x(e.at_ms) - x(start), state === 'closed' ? 0.5 : 3);
    const seg = svgEl('rect', { x: Math.min(x(start), 1000 - width), y: 4, width, height: 22, class: 'seg seg-' + state });
    const tip = svgEl('title', {});
    tip.textContent = state.replace('_', ' ') + ' from ' + new Date(start).toISOString().slice(11, 19) + ' UTC';
    seg.appendChild(tip);
    svg.appendChild(seg);
    if (e.to) { state = e.to; start = e.at_ms; }
  }
  $('timeline').replaceChildren(svg);
}

// Calls and failures per sampling interval over the last hour, from the console's samples of
// the cumulative counters.
function drawChart(samples) {
  const box = $('chart');
  if (samples.length < 2) {
    box.textContent = 'The chart fills as the console samples the counters (once a minute).';
    return;
  }
  const points = [];
  for (let i = 1; i < samples.length; i++) {
    const a = samples[i - 1], b = samples[i];
    points.push({ t: b.at_ms, calls: Math.max(b.calls - a.calls, 0), failures: Math.max(b.failures - a.failures, 0) });
  }
  const t0 = points[0].t, t1 = Math.max(points[points.length - 1].t, t0 + 1);
  const top = Math.max(1, ...points.map((p) => p.calls));
  const x = (t) => 40 + ((t - t0) / (t1 - t0)) * 950;
  const y = (v) => 110 - (v / top) * 100;
  const svg = svgEl('svg', { viewBox: '0 0 1000 130', preserveAspectRatio: 'none', class: 'chart', role: 'img' });
  const title = svgEl('title', {});
  title.textContent = 'calls (blue) and failures (red) per sample over the last hour';
  svg.appendChild(title);
  svg.appendChild(svgEl('line', { x1: 40, y1: 110, x2: 990, y2: 110, class: 'axis' }));
  const label = (text, ly) => { const t = svgEl('text', { x: 36, y: ly, class: 'label', 'text-anchor': 'end' }); t.textContent = text; svg.appendChild(t); };
  label(String(top), 14);
  label('0', 114);
  for (const [key, cls] of [['calls', 'line-calls'], ['failures', 'line-failures']]) {
    svg.appendChild(svgEl('polyline', { points: points.map((p) => x(p.t) + ',' + y(p[key])).join(' '), class: cls }));
  }
  box.replaceChildren(svg);
}

async function showHistory(name) {
  const section = $('history');
  try {
    const body = await get('/api/breakers/' + encodeURIComponent(name) + '/history');
    const sampled = await get('/api/breakers/' + encodeURIComponent(name) + '/samples');
    drawTimeline(body.history);
    drawChart(sampled.samples);
    $('history-name').textContent = name;
    const rows = $('history-rows');
    rows.replaceChildren();
    for (const e of body.history) {
      const row = document.createElement('tr');
      cell(row, new Date(e.at_ms).toISOString().replace('T', ' ').slice(0, 19), 'num');
      cell(row, e.from.replace('_', ' '));
      const to = cell(row, '');
      const badge = document.createElement('span');
      badge.className = 'state state-' + e.to;
      badge.textContent = e.to.replace('_', ' ');
      to.appendChild(badge);
      cell(row, e.reason || '-', 'reason');
      cell(row, [e.note, e.failure && 'failure: ' + e.failure].filter(Boolean).join(' · '), 'reason');
      cell(row, String(e.epoch), 'num');
      rows.appendChild(row);
    }
    $('history-empty').hidden = body.history.length !== 0;
    section.hidden = false;
  } catch (err) {
    notice(err.message, true);
  }
}

function render() {
  const filter = $('filter').value.trim().toLowerCase();
  const rows = $('rows');
  rows.replaceChildren();
  const shown = last.filter((b) => !filter || b.name.toLowerCase().includes(filter));
  for (const b of shown) {
    const row = document.createElement('tr');
    row.dataset.state = b.state;
    if (flash.has(b.name)) row.className = 'flash';
    cell(row, b.name, 'name');
    const st = cell(row, '', 'state-cell');
    const badge = document.createElement('span');
    badge.className = 'state state-' + b.state;
    badge.textContent = b.state.replace('_', ' ');
    st.appendChild(badge);
    // Under a quorum: how many processes opened for themselves and count toward it now.
    const quorum = b.quorum > 1 || b.quorum_fraction || b.reporters > 0
      ? 'quorum ' + b.quorum + (b.quorum_fraction ? ' and ' + b.quorum_fraction + ' of the active' : '')
        + ': ' + b.reporters + ' reporting'
      : '';
    cell(row, [b.reason, quorum].filter(Boolean).join(' · ') || '-', 'reason');
    cell(row, b.recovery_due ? 'due' : seconds(b.retry_after_ms), 'num');
    cell(row, String(b.epoch), 'num');
    cell(row, String(b.trips), 'num');
    cell(row, String(b.probes), 'num');
    cell(row, String(b.calls), 'num');
    cell(row, b.failure_rate === null ? '-' : (b.failure_rate * 100).toFixed(1) + '%', 'num');
    cell(row, String(b.rejected), 'num');
    cell(row, b.config ? b.config.slice(0, 12) : '-', 'config');
    actions(row, b);
    rows.appendChild(row);
  }
  $('empty').hidden = last.length !== 0;
  flash = new Set();
}

async function get(path) {
  const r = await fetch(path, { headers: headers() });
  const body = await r.json().catch(() => ({ error: r.statusText }));
  if (r.status === 401) throw new Error('reads need the token: type it above');
  if (r.status === 503) throw new Error('Redis unreachable: ' + (body.error || ''));
  if (!r.ok) throw new Error(body.error || String(r.status));
  return body;
}

async function load() {
  try {
    const [list, alerts] = await Promise.all([get('/api/breakers'), get('/api/alerts')]);
    last = list.breakers;
    render();
    const ul = $('alert-list');
    ul.replaceChildren();
    for (const a of alerts.alerts) {
      const li = document.createElement('li');
      li.textContent = a.breaker + ' — ' + a.message;
      ul.appendChild(li);
    }
    $('alerts').hidden = alerts.alerts.length === 0;
    if (info.read_only) notice('Read-only: the console was started without a token, so its buttons are off.');
    else if (!$('notice').classList.contains('error') && !$('notice').classList.contains('warning')) notice('');
  } catch (e) {
    notice(e.message, true);
    conn('Redis unreachable', 'down');
  }
}

function reloadSoon() {
  if (reloadTimer) return;
  reloadTimer = setTimeout(() => { reloadTimer = null; load(); }, 100);
}

function follow() {
  if (info.auth_reads) {
    // EventSource cannot send the token: poll each second instead.
    conn('polling', 'live');
    setInterval(load, 1000);
    return;
  }
  const source = new EventSource('/api/events');
  source.addEventListener('open', () => conn('live', 'live'));
  source.addEventListener('error', () => conn('reconnecting', 'down'));
  source.addEventListener('transition', (m) => {
    try { flash.add(JSON.parse(m.data).name); } catch (_) { /* not ours */ }
    reloadSoon();
  });
}

async function start() {
  try {
    info = await get('/api/info');
    $('prefix').textContent = info.prefix + ':*';
  } catch (e) {
    notice(e.message, true);
  }
  $('filter').addEventListener('input', render);
  $('token').addEventListener('change', load);
  await load();
  follow();
  setInterval(load, 5000);
}

start();
