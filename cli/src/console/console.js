// redis-breaker console: renders /api/breakers, follows /api/events, sends the operator's
// writes. Breaker names, reasons and notes are attacker-controlled text: they are only ever set
// as textContent, never parsed as HTML, and URL-encoded in paths. The page is served under a
// CSP without inline script or style: it shows and hides with classes and `hidden`.
'use strict';

const $ = (id) => document.getElementById(id);
const STATES = ['open', 'half_open', 'forced_open', 'forced_closed', 'closed'];
let info = { read_only: true, auth_reads: false, prefix: '' };
let last = [];
let flash = new Set();
let reloadTimer = null;
// Breakers whose event the list does not show yet: name -> [epoch, when the event came].
const awaiting = new Map();
// What the URL's fragment asks for: a state filter and the breaker whose history is shown.
let view = { state: '', breaker: '' };
// The breaker in the history panel, and what its row looked like when the panel was drawn.
let shown = { name: '', mark: '', seq: 0 };
// Cells whose durations run on between reads: [td, ms at `at`, `at`, sign, format].
let ticking = [];
let loading = null;
let stream = 'connecting';
let downSince = 0;
let readAt = 0;
// The History button scrolls to the panel once drawn; a link or a live update does not.
let scrollToHistory = false;

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

// A duration in words, its two largest units: 450ms, 1.5s, 42s, 3m 20s, 12m, 3h 5m, 2d 4h.
function words(ms) {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) return '-';
  ms = Math.max(0, Math.round(ms));
  if (ms < 1000) return ms + 'ms';
  const s = Math.floor(ms / 1000), m = Math.floor(s / 60), h = Math.floor(m / 60), d = Math.floor(h / 24);
  if (s < 10 && ms % 1000 >= 100) return (Math.floor(ms / 100) / 10) + 's';
  if (m < 1) return s + 's';
  if (m < 10) return m + 'm' + (s % 60 ? ' ' + (s % 60) + 's' : '');
  if (h < 1) return m + 'm';
  if (d < 1) return h + 'h' + (m % 60 ? ' ' + (m % 60) + 'm' : '');
  return d + 'd' + (h % 24 ? ' ' + (h % 24) + 'h' : '');
}

// How long something has lasted, to the second: a clock's milliseconds are noise here.
function age(ms) {
  if (ms === null || ms === undefined) return '-';
  return ms < 1000 ? '<1s' : words(Math.floor(ms / 1000) * 1000);
}

// The library writes durations into reasons in milliseconds ("for 600000ms"): read them in words.
function inWords(text) {
  return String(text || '').replace(/\b(\d+)ms\b/g, (_, n) => words(Number(n)));
}

function utc(ms) {
  return new Date(ms).toISOString().slice(11, 19) + ' UTC';
}

function stateName(state) {
  return state.replace('_', ' ');
}

function cell(row, text, cls) {
  const td = document.createElement('td');
  td.textContent = text;
  if (cls) td.className = cls;
  row.appendChild(td);
  return td;
}

function div(parent, text, cls) {
  const d = document.createElement('div');
  d.textContent = text;
  d.className = cls;
  parent.appendChild(d);
  return d;
}

// A duration that runs on (sign 1) or down (sign -1) each second until the next read.
function tick(td, ms, sign, format) {
  td.textContent = format(ms);
  if (ms !== null && ms !== undefined) ticking.push([td, ms, performance.now(), sign, format]);
}

function ticked() {
  drawBanner();
  const now = performance.now();
  for (const [td, ms, at, sign, format] of ticking) td.textContent = format(Math.max(ms + sign * (now - at), 0));
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

// --- The URL's fragment: #state=open, #breaker=payments, or both. ---

function readHash() {
  const p = new URLSearchParams(location.hash.slice(1));
  const state = p.get('state') || '';
  return { state: STATES.includes(state) ? state : '', breaker: p.get('breaker') || '' };
}

function setHash(next) {
  const p = new URLSearchParams();
  if (next.breaker) p.set('breaker', next.breaker);
  if (next.state) p.set('state', next.state);
  const text = p.toString();
  if (text !== location.hash.slice(1)) location.hash = text;
  else if (next.breaker) showHistory(next.breaker);
}

function applyHash() {
  view = readHash();
  render();
  if (view.breaker && view.breaker !== shown.name) showHistory(view.breaker);
  if (!view.breaker) hideHistory();
}

// --- Writes: one dialog for open, close and reset. ---

const ACTIONS = {
  open: { title: (n) => 'Force ' + n + ' open', submit: 'Force open', duration: true,
    what: 'Every process of the fleet rejects its calls until the time is up or someone resets it.' },
  close: { title: (n) => 'Force ' + n + ' closed', submit: 'Force closed', duration: true,
    what: 'It never trips, whatever fails, until the time is up or someone resets it.' },
  reset: { title: (n) => 'Reset ' + n, submit: 'Reset', duration: false,
    what: 'Back to closed: its failures, trips and probes are cleared, a forced state ends.' },
};
let pending = null;

function openDialog(name, action) {
  const a = ACTIONS[action];
  pending = { name, action };
  $('write-title').textContent = a.title(name);
  const unknown = !last.some((b) => b.name === name);
  $('write-what').textContent = a.what + (unknown ? ' No breaker of this name has keys yet: this creates its state.' : '');
  $('write-for-field').hidden = !a.duration;
  $('write-for').value = a.duration ? '10m' : '';
  $('write-note').value = '';
  $('write-token').value = $('token').value;
  $('write-name').textContent = name;
  $('write-confirm').value = '';
  $('write-submit').textContent = a.submit;
  $('write-submit').disabled = true;
  writeError('');
  $('write').showModal();
  (a.duration ? $('write-for') : $('write-note')).focus();
}

function writeError(text) {
  $('write-error').textContent = text;
  $('write-error').hidden = !text;
}

async function submitDialog(e) {
  e.preventDefault();
  if (!pending || $('write-confirm').value.trim() !== pending.name) return;
  $('token').value = $('write-token').value;
  const { name, action } = pending;
  const duration = ACTIONS[action].duration ? $('write-for').value.trim() : '';
  $('write-submit').disabled = true;
  try {
    const done = await write(name, action, duration, $('write-note').value.trim());
    if (done.error) {
      writeError(done.error);
      return;
    }
    $('write').close();
    if ($('force-name').value.trim() === name) $('force-name').value = '';
    if (done.warning) notice(action + ' ' + name + ' was written, but: ' + done.warning, 'warning');
    else if (!info.read_only) notice('');
    await load();
  } finally {
    $('write-submit').disabled = $('write-confirm').value.trim() !== name;
  }
}

// Answers { error } when the server refused (its reason), else { warning } (maybe null).
async function write(name, action, duration, note) {
  const query = new URLSearchParams();
  if (duration) query.set('for', duration);
  if (note) query.set('note', note);
  let url = '/api/breakers/' + encodeURIComponent(name) + '/' + action;
  if (query.toString()) url += '?' + query.toString();
  let r;
  try {
    r = await fetch(url, { method: 'POST', headers: headers() });
  } catch (err) {
    return { error: 'the console did not answer: ' + err.message };
  }
  const body = await r.json().catch(() => ({}));
  if (!r.ok) {
    const hint = r.status === 401 ? ' (type the token above)' : '';
    return { error: (body.error || r.status + ' ' + r.statusText) + hint };
  }
  // Written, but Redis would not publish its event (before 7.0): say so until the next write.
  return { warning: body.warning || null };
}

function actions(row, b) {
  const td = document.createElement('div');
  cell(row, '', 'actions').appendChild(td);
  td.appendChild(button('Force open…', 'danger', () => openDialog(b.name, 'open')));
  td.appendChild(button('Force close…', '', () => openDialog(b.name, 'close')));
  td.appendChild(button('Reset…', '', () => openDialog(b.name, 'reset')));
  const h = document.createElement('button');
  h.type = 'button';
  h.textContent = 'History';
  h.addEventListener('click', () => {
    scrollToHistory = true;
    setHash({ state: view.state, breaker: b.name });
  });
  td.appendChild(h);
}

// --- The history panel. ---

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
    tip.textContent = stateName(state) + ' from ' + utc(start);
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
    box.textContent = 'The chart fills as the console samples the counters (every 10 s).';
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

// What of a row tells that its history changed.
function mark(name) {
  const b = last.find((x) => x.name === name);
  return b ? b.state + '/' + b.epoch + '/' + b.changed_at_ms : '';
}

function hideHistory() {
  shown = { name: '', mark: '', seq: shown.seq + 1 };
  $('history').hidden = true;
}

async function showHistory(name, retries = 0) {
  const seq = shown.seq + 1;
  shown = { name, mark: mark(name), seq };
  try {
    const path = '/api/breakers/' + encodeURIComponent(name);
    const [body, sampled] = await Promise.all([get(path + '/history'), get(path + '/samples')]);
    // A later click or event asked for another read: it draws.
    if (shown.seq !== seq) return;
    drawTimeline(body.history);
    drawChart(sampled.samples);
    $('history-name').textContent = name;
    const rows = $('history-rows');
    rows.replaceChildren();
    for (const e of body.history) {
      const row = document.createElement('tr');
      cell(row, new Date(e.at_ms).toISOString().replace('T', ' ').slice(0, 19), 'num');
      cell(row, stateName(e.from));
      const to = cell(row, '');
      const badge = document.createElement('span');
      badge.className = 'state state-' + e.to;
      badge.textContent = stateName(e.to);
      to.appendChild(badge);
      cell(row, inWords(e.reason) || '-', 'reason');
      cell(row, [e.note, e.failure && 'failure: ' + e.failure].filter(Boolean).join(' · '), 'reason');
      cell(row, String(e.epoch), 'num');
      rows.appendChild(row);
    }
    $('history-empty').hidden = body.history.length !== 0;
    // The table already shows a newer transition than this history (read within the console's
    // second of caching): read it again shortly, a few times at most.
    const row = last.find((b) => b.name === name);
    const newest = body.history.length ? body.history[0].epoch : 0;
    if (row && row.epoch > newest && retries < 5) setTimeout(() => { if (shown.seq === seq) showHistory(name, retries + 1); }, 1000);
    $('history').hidden = false;
    if (scrollToHistory) $('history').scrollIntoView();
    scrollToHistory = false;
  } catch (err) {
    if (shown.seq === seq) notice('history of ' + name + ': ' + err.message, true);
  }
}

function refreshHistory() {
  if (shown.name) showHistory(shown.name);
}

// --- The table and the counts. ---

function drawCounts() {
  const counts = { '': last.length };
  for (const s of STATES) counts[s] = 0;
  for (const b of last) counts[b.state] = (counts[b.state] || 0) + 1;
  const nav = $('counts');
  nav.replaceChildren();
  for (const state of [''].concat(STATES)) {
    const b = document.createElement('button');
    b.type = 'button';
    b.dataset.state = state;
    b.className = 'count-button' + (state ? ' count-' + state : '') + (counts[state] ? '' : ' zero');
    b.setAttribute('aria-pressed', String(view.state === state));
    const label = document.createElement('span');
    label.textContent = state ? stateName(state) : 'all';
    const n = document.createElement('span');
    n.className = 'count';
    n.textContent = String(counts[state]);
    b.append(label, n);
    b.addEventListener('click', () => setHash({ state, breaker: view.breaker }));
    nav.appendChild(b);
  }
}

// The rate over the console's samples and the span they cover: "last 5m", "last 2m", "last 40s".
function span(ms) {
  if (ms >= 60_000) return 'last ' + words(Math.round(ms / 60_000) * 60_000);
  return 'last ' + words(Math.round(ms / 1000) * 1000);
}

function rate(row, b) {
  const r = b.failure_rate_5m;
  const td = cell(row, '', 'num');
  const value = document.createElement('span');
  value.className = 'rate';
  value.textContent = r && r.rate !== null && r.rate !== undefined ? (r.rate * 100).toFixed(1) + '%' : '-';
  td.appendChild(value);
  if (r && r.calls) {
    div(td, r.failures + ' of ' + r.calls + ' failed', 'sub');
    td.title = r.failures + ' failures in ' + r.calls + ' calls over the ' + span(r.over_ms);
  }
}

function render() {
  ticking = [];
  drawCounts();
  const filter = $('filter').value.trim().toLowerCase();
  const rows = $('rows');
  rows.replaceChildren();
  const shownRows = last.filter((b) => (!filter || b.name.toLowerCase().includes(filter)) && (!view.state || b.state === view.state));
  for (const b of shownRows) {
    const row = document.createElement('tr');
    row.dataset.state = b.state;
    // A row flashes once, when it shows the event that named it.
    const wanted = awaiting.get(b.name);
    if (flash.has(b.name) && (!wanted || b.epoch >= wanted[0])) {
      row.className = 'flash';
      flash.delete(b.name);
    }
    cell(row, b.name, 'name');
    const st = cell(row, '', 'state-cell');
    const badge = document.createElement('span');
    badge.className = 'state state-' + b.state;
    badge.textContent = stateName(b.state);
    st.appendChild(badge);
    // How long in its state, under the badge where the "open for" column does not say it.
    const opened = b.open_for_ms !== null && b.open_for_ms !== undefined;
    if (!opened && b.state_for_ms !== null && b.state_for_ms !== undefined) {
      tick(div(st, '', 'since'), b.state_for_ms, 1, (ms) => 'for ' + age(ms));
    }
    if (b.probes > 0) div(st, b.probes + (b.probes === 1 ? ' probe' : ' probes') + ' in flight', 'since');
    // A recovery ramp: the share of calls each process admits now (Redis's figure at the read).
    if (b.ramp) div(st, 'ramping: ' + Math.floor(b.ramp.admitted * 100) + '% admitted', 'since ramping');
    tick(cell(row, '', 'num open-for'), b.open_for_ms, 1, age);
    // Under a quorum: how many processes opened for themselves and count toward it now.
    const quorum = b.quorum > 1 || b.quorum_fraction || b.reporters > 0
      ? 'quorum ' + b.quorum + (b.quorum_fraction ? ' and ' + b.quorum_fraction + ' of the active' : '')
        + ': ' + b.reporters + ' reporting'
      : '';
    const why = cell(row, '', 'reason-cell');
    div(why, [inWords(b.reason), quorum].filter(Boolean).join(' · ') || '-', 'reason');
    if (b.note) div(why, b.note, 'note');
    const retry = cell(row, '', 'num');
    if (b.recovery_due) retry.textContent = 'due';
    else tick(retry, b.retry_after_ms, -1, (ms) => (ms ? 'in ' + words(ms) : '-'));
    cell(row, String(b.epoch), 'num');
    cell(row, String(b.trips), 'num');
    cell(row, String(b.calls), 'num');
    rate(row, b);
    cell(row, String(b.rejected), 'num');
    cell(row, b.config ? b.config.slice(0, 8) : '-', 'config').title = b.config || 'no config reported';
    actions(row, b);
    rows.appendChild(row);
  }
  const withRate = last.find((b) => b.failure_rate_5m);
  $('rate-span').textContent = withRate ? span(withRate.failure_rate_5m.over_ms) : '';
  $('empty').hidden = last.length !== 0;
  $('none-shown').hidden = last.length === 0 || shownRows.length !== 0;
  for (const name of flash) if (!awaiting.has(name)) flash.delete(name);
}

// A read of the API; a refusal throws an Error with the status and the server's reason.
async function get(path) {
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), 10_000);
  let r;
  try {
    r = await fetch(path, { headers: headers(), signal: abort.signal });
  } catch (err) {
    throw Object.assign(new Error(abort.signal.aborted ? 'no answer in 10s' : 'the console did not answer'), { status: 0 });
  } finally {
    clearTimeout(timer);
  }
  const body = await r.json().catch(() => ({ error: r.statusText }));
  if (r.ok) return body;
  const why = r.status === 401 ? 'reads need the token: type it above' : String(body.error || r.status);
  throw Object.assign(new Error(why), { status: r.status });
}

// While the console cannot read Redis (503) or does not answer, the last rows stay under a banner.
let down = null;
function unreachable(err) {
  if (!downSince) downSince = Date.now();
  const why = err.message.replace(/^(redis (is )?unreachable: )+/i, '');
  down = { redis: err.status === 503, why };
  drawBanner();
  $('rows').classList.add('stale');
  conn(down.redis ? 'Redis unreachable' : 'console unreachable', 'down');
}

function drawBanner() {
  if (!down) return;
  const since = Date.now() - downSince;
  let text = (down.redis ? 'Redis unreachable: ' : 'The console does not answer: ') + down.why + ' — since ' + utc(downSince);
  if (since >= 1000) text += ' (' + words(since) + ')';
  if (readAt) text += '; the rows below are as read at ' + utc(readAt);
  $('banner').textContent = text;
  $('banner').hidden = false;
}

function reachable() {
  downSince = 0;
  down = null;
  $('banner').hidden = true;
  $('rows').classList.remove('stale');
  conn(stream, stream === 'reconnecting' ? 'down' : 'live');
}

async function loadAlerts() {
  try {
    const alerts = await get('/api/alerts');
    const ul = $('alert-list');
    ul.replaceChildren();
    for (const a of alerts.alerts) {
      const li = document.createElement('li');
      li.textContent = a.breaker + ' — ' + inWords(a.message);
      ul.appendChild(li);
    }
    $('alerts').hidden = alerts.alerts.length === 0;
  } catch (_) {
    // The list's banner says why.
  }
}

async function loadOnce() {
  loadAlerts();
  try {
    const list = await get('/api/breakers');
    last = list.breakers;
    readAt = list.read_at_ms || Date.now();
    reachable();
    render();
    if (shown.name && mark(shown.name) !== shown.mark) refreshHistory();
    awaited();
    if (info.read_only) notice('Read-only: the console was started without a token, so its buttons are off.');
    else if (!$('notice').classList.contains('error') && !$('notice').classList.contains('warning')) notice('');
  } catch (e) {
    if (e.status === 503 || e.status === 0) unreachable(e);
    else notice(e.message, true);
  }
}

// One read at a time: reads asked for while one runs make one more read after it.
let again = false;
async function load() {
  if (loading) {
    again = true;
    return loading;
  }
  loading = (async () => {
    do {
      again = false;
      await loadOnce();
    } while (again);
  })();
  try {
    await loading;
  } finally {
    loading = null;
  }
}

function reloadSoon(delay) {
  if (!reloadTimer) reloadTimer = setTimeout(() => { reloadTimer = null; load(); }, delay);
}

// The console serves the list from a shared read of Redis made every second or more
// (--read-every): after an event, the list is read again each second until it shows the event's
// epoch (for half a minute at most).
function awaited() {
  const now = Date.now();
  for (const [name, [epoch, since]] of awaiting) {
    const b = last.find((x) => x.name === name);
    if ((b && b.epoch >= epoch) || now - since > 30_000) awaiting.delete(name);
  }
  if (awaiting.size) reloadSoon(1000);
}

function follow() {
  if (info.auth_reads) {
    // EventSource cannot send the token: poll each second instead.
    stream = 'polling';
    conn('polling', 'live');
    setInterval(load, 1000);
    return;
  }
  const source = new EventSource('/api/events');
  source.addEventListener('open', () => { stream = 'live'; if (!downSince) conn('live', 'live'); });
  source.addEventListener('error', () => { stream = 'reconnecting'; conn('reconnecting', 'down'); });
  source.addEventListener('transition', (m) => {
    let name = null;
    let epoch = 0;
    try { ({ name, epoch } = JSON.parse(m.data)); } catch (_) { /* not ours */ }
    if (typeof name !== 'string') return;
    flash.add(name);
    awaiting.set(name, [Number(epoch) || 0, Date.now()]);
    if (name === shown.name) {
      refreshHistory();
      // The console keeps a history it read for a second: read it again once that is over.
      setTimeout(() => { if (shown.name === name) refreshHistory(); }, 1200);
    }
    reloadSoon(100);
  });
}

function wire() {
  $('filter').addEventListener('input', render);
  $('token').addEventListener('change', load);
  window.addEventListener('hashchange', applyHash);
  $('history-close').addEventListener('click', () => setHash({ state: view.state, breaker: '' }));
  $('show-all').addEventListener('click', (e) => { e.preventDefault(); setHash({ state: '', breaker: view.breaker }); });
  $('force-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const name = $('force-name').value.trim();
    if (name) openDialog(name, 'open');
  });
  $('write-form').addEventListener('submit', submitDialog);
  $('write-cancel').addEventListener('click', () => $('write').close());
  $('write-confirm').addEventListener('input', () => {
    $('write-submit').disabled = !pending || $('write-confirm').value.trim() !== pending.name;
  });
  $('write').addEventListener('close', () => { pending = null; });
}

async function start() {
  wire();
  try {
    info = await get('/api/info');
    $('prefix').textContent = info.prefix + ':*';
  } catch (e) {
    notice(e.message, true);
  }
  for (const el of document.querySelectorAll('#force-form input, #force-form button')) el.disabled = info.read_only;
  view = readHash();
  await load();
  if (view.breaker) showHistory(view.breaker);
  follow();
  setInterval(load, 5000);
  setInterval(ticked, 1000);
}

start();
