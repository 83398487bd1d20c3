// SS-ACL viewer: posts the chosen image to v1/report and v1/ground (same origin, the key typed
// into the page as X-API-Key) and overlays each sentence's or phrase's heatmap and box.
// Boxes are [x0, y0, x1, y1) in original image pixels; heatmaps cover the whole image at their
// own size, so both are placed in percent of the image. PNG/JPEG are shown from the local file
// (never uploaded twice); DICOM pixels are not decoded here: a blank frame of the image's size.
(() => {
  'use strict';

  const HEATMAP_SIDE = 512; // longest heatmap side asked for, px (the server never upscales)
  const $ = (id) => document.getElementById(id);
  const state = { file: null, url: null, report: null, ground: null, image: null, pinned: null };
  let seq = 0; // request counter: a late answer for an older image is dropped
  window.cxrViewer = state; // read-only view for scripted checks (tests)

  function setStatus(text, isError) {
    const el = $('status');
    el.textContent = text;
    el.classList.toggle('error', Boolean(isError));
    el.setAttribute('role', isError ? 'alert' : 'status');
  }

  function requestHeaders() {
    const headers = { Accept: 'application/json' };
    const key = $('api-key').value.trim();
    if (key) headers['X-API-Key'] = key;
    return headers;
  }

  async function postImage(path, params) {
    const body = new FormData();
    body.append('file', state.file, state.file.name || 'image');
    const res = await fetch(`${path}?${params}`, { method: 'POST', body, headers: requestHeaders() });
    const data = await res.json().catch(() => null);
    if (!res.ok) {
      const why = data && data.title ? `${data.title}: ${data.detail}` : res.statusText;
      throw new Error(`${res.status} ${why}`);
    }
    return data;
  }

  function pct(value, total) {
    return `${(100 * value) / total}%`;
  }

  // item: {heatmap, box, label, caption, grey} or null (nothing pinned)
  function show(item) {
    const overlay = $('overlay');
    const box = $('box');
    if (!item || !state.image) {
      overlay.hidden = true;
      overlay.removeAttribute('src');
      box.hidden = true;
      $('overlay-caption').textContent = 'Hover, focus or click a sentence to see where it looks.';
      return;
    }
    overlay.hidden = !item.heatmap;
    if (item.heatmap) {
      overlay.src = `data:${item.heatmap.media_type};base64,${item.heatmap.data}`;
      overlay.classList.toggle('grey', item.grey);
    }
    const { width: w, height: h } = state.image;
    const b = item.box;
    Object.assign(box.style, {
      left: pct(b.x0, w), top: pct(b.y0, h), width: pct(b.x1 - b.x0, w), height: pct(b.y1 - b.y0, h),
    });
    $('box-label').textContent = item.label;
    box.hidden = false;
    $('overlay-caption').textContent = item.caption;
  }

  function pin(item, button) {
    state.pinned = item;
    document.querySelectorAll('button.choice').forEach((el) => {
      el.setAttribute('aria-pressed', String(el === button));
    });
    show(item);
  }

  function choiceButton(text, detail, item) {
    const button = document.createElement('button');
    button.type = 'button';
    button.className = 'choice';
    button.setAttribute('aria-pressed', 'false');
    const main = document.createElement('span');
    main.textContent = text;
    const small = document.createElement('small');
    small.textContent = detail;
    button.append(main, small);
    button.addEventListener('click', () => pin(item, button)); // Enter and Space click too
    button.addEventListener('mouseenter', () => show(item));
    button.addEventListener('focus', () => show(item));
    button.addEventListener('mouseleave', () => show(state.pinned));
    button.addEventListener('blur', () => show(state.pinned));
    const li = document.createElement('li');
    li.append(button);
    return li;
  }

  function anatomyName(anatomy) {
    return anatomy && anatomy.length ? anatomy[0].name : 'no anatomy';
  }

  function renderSentences(rep, grey) {
    const list = $('sentences');
    list.replaceChildren();
    rep.sentences.forEach((s, i) => {
      const where = anatomyName(s.anatomy);
      const item = {
        heatmap: s.heatmap, box: s.box, label: where, grey,
        caption: `Sentence ${i + 1}: "${s.text}" (${where}, confidence ${s.confidence.toFixed(2)})`,
      };
      list.append(choiceButton(s.text, `${where} · confidence ${s.confidence.toFixed(2)}`, item));
    });
    if (!rep.sentences.length) list.append(Object.assign(document.createElement('li'), {
      textContent: 'No sentences.' }));
  }

  function renderSections(rep) {
    const out = $('sections');
    out.replaceChildren();
    const parts = [['Findings', rep.findings], ['Impression', rep.impression]].filter((p) => p[1]);
    if (!parts.length) parts.push(['Report', rep.report]);
    for (const [title, text] of parts) {
      const h = document.createElement('h3');
      h.textContent = title;
      const p = document.createElement('p');
      p.textContent = text;
      out.append(h, p);
    }
  }

  function renderEntities(rep) {
    const body = $('entities').tBodies[0];
    body.replaceChildren();
    for (const e of rep.entities) {
      const row = body.insertRow();
      row.classList.toggle('predicted', e.predicted);
      row.insertCell().textContent = e.predicted ? `${e.name} (prompted the decoder)` : e.name;
      const cell = row.insertCell();
      const meter = Object.assign(document.createElement('meter'), { min: 0, max: 1, value: e.probability });
      meter.setAttribute('aria-label', `${e.name} probability`);
      cell.append(meter, ` ${e.probability.toFixed(3)}`);
    }
  }

  function renderTimings(timings, title) {
    const dl = $('timings');
    if (title === 'report') dl.replaceChildren();
    for (const [stage, ms] of Object.entries(timings)) {
      const dt = document.createElement('dt');
      dt.textContent = `${title} ${stage}`;
      const dd = document.createElement('dd');
      dd.textContent = ms.toFixed(1);
      dl.append(dt, dd);
    }
  }

  function renderImage(img) {
    state.image = img;
    $('stage').style.aspectRatio = `${img.width} / ${img.height}`;
    const raster = img.source === 'png' || img.source === 'jpeg';
    const base = $('base');
    base.hidden = !raster;
    $('no-pixels').hidden = raster;
    if (raster && base.getAttribute('src') !== state.url) base.src = state.url;
  }

  function renderReport(rep, grey) {
    state.report = rep;
    renderImage(rep.image);
    renderSentences(rep, grey);
    renderSections(rep);
    renderEntities(rep);
    renderTimings(rep.timings_ms, 'report');
    const m = rep.model;
    const warn = rep.image.warnings.length ? ` Warnings: ${rep.image.warnings.join('; ')}.` : '';
    $('model').textContent = `${m.name} ${m.version} (weights ${m.weights_sha256.slice(0, 12)}…), `
      + `${rep.image.source} ${rep.image.width}×${rep.image.height}, `
      + `maps: ${rep.grounding_method}, request ${rep.request_id}.${warn}`;
    $('disclaimer').textContent = rep.disclaimer;
    $('results').hidden = false;
    show(null);
  }

  async function runReport() {
    if (!state.file) return;
    const mine = ++seq;
    const grey = !$('colormap').checked;
    $('run').disabled = true;
    $('ground').disabled = true;
    setStatus(`Generating the report for ${state.file.name || 'the image'}…`);
    const params = new URLSearchParams({ heatmaps: 'true', colormap: String(!grey), heatmap_size: HEATMAP_SIDE });
    try {
      const rep = await postImage('v1/report', params);
      if (mine !== seq) return;
      state.pinned = null;
      $('groundings').replaceChildren();
      renderReport(rep, grey);
      setStatus(`Report ready (${rep.timings_ms.total.toFixed(0)} ms, ${rep.sentences.length} sentences).`);
    } catch (err) {
      if (mine === seq) setStatus(`Report failed: ${err.message}`, true);
    } finally {
      if (mine === seq) {
        $('run').disabled = false;
        $('ground').disabled = !state.report;
      }
    }
  }

  async function runGround(phrase) {
    const mine = seq;
    const grey = !$('colormap').checked;
    $('ground').disabled = true;
    setStatus(`Grounding "${phrase}"…`);
    const params = new URLSearchParams({ phrase, colormap: String(!grey), heatmap_size: HEATMAP_SIDE });
    try {
      const res = await postImage('v1/ground', params);
      if (mine !== seq) return;
      state.ground = res;
      renderTimings(res.timings_ms, 'ground');
      const g = res.groundings[0];
      const item = {
        heatmap: g.heatmap, box: g.box, label: g.anatomy.name, grey,
        caption: `Phrase "${g.phrase}": ${g.anatomy.name} (score ${g.score.toFixed(2)}, ${g.method})`,
      };
      const li = choiceButton(g.phrase, `${g.anatomy.name} · score ${g.score.toFixed(2)}`, item);
      $('groundings').prepend(li);
      pin(item, li.firstChild);
      setStatus(`Grounded "${g.phrase}" on ${g.anatomy.name}.`);
    } catch (err) {
      if (mine === seq) setStatus(`Grounding failed: ${err.message}`, true);
    } finally {
      if (mine === seq) $('ground').disabled = false;
    }
  }

  function useFile(file) {
    if (!file) return;
    if (state.url) URL.revokeObjectURL(state.url);
    Object.assign(state, { file, url: URL.createObjectURL(file), report: null, ground: null });
    runReport();
  }

  function wire() {
    $('file').addEventListener('change', (e) => useFile(e.target.files[0]));
    $('report-form').addEventListener('submit', (e) => { e.preventDefault(); runReport(); });
    $('ground-form').addEventListener('submit', (e) => {
      e.preventDefault();
      const phrase = $('phrase').value.trim();
      if (phrase && state.report) runGround(phrase);
    });
    $('base').addEventListener('error', () => {
      if (!state.file) return;
      $('base').hidden = true;
      $('no-pixels').hidden = false;
      $('no-pixels').textContent = 'The browser cannot decode this image: overlays on a blank frame.';
    });
    const drop = $('drop');
    window.addEventListener('dragover', (e) => e.preventDefault()); // no navigation on a miss
    window.addEventListener('drop', (e) => e.preventDefault());
    drop.addEventListener('dragover', () => drop.classList.add('over'));
    drop.addEventListener('dragleave', () => drop.classList.remove('over'));
    drop.addEventListener('drop', (e) => {
      drop.classList.remove('over');
      const files = e.dataTransfer && e.dataTransfer.files;
      if (files && files.length) useFile(files[0]);
    });
  }

  wire();
})();
