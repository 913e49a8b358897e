// The API reference page: lists the operations of /api/openapi.json and the
// socket messages of /api/asyncapi.json, with nothing from outside the engine.

/** @param {string} tag @param {string} [text] @param {string} [cls] */
function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (cls) node.className = cls;
  return node;
}

/** The name of a `$ref`'d schema, or the schema's type. @param {any} schema */
function typeName(schema) {
  if (!schema) return '';
  if (schema.$ref) return schema.$ref.split('/').pop();
  if (schema.type === 'array') return `${typeName(schema.items)}[]`;
  return Array.isArray(schema.type) ? schema.type.join(' | ') : (schema.type || 'any');
}

/** Limits of a schema, as text. @param {any} s */
function limits(s) {
  const parts = [];
  for (const key of ['minLength', 'maxLength', 'minimum', 'maximum', 'exclusiveMaximum', 'minItems', 'maxItems', 'default']) {
    if (s && s[key] !== undefined) parts.push(`${key} ${s[key]}`);
  }
  return parts.join(', ');
}

async function operations() {
  const doc = await (await fetch('/api/openapi.json')).json();
  const root = document.getElementById('operations');
  for (const [path, item] of Object.entries(doc.paths)) {
    for (const [method, op] of Object.entries(item)) {
      const section = el('section', undefined, 'operation');
      const title = el('h3');
      title.append(el('code', method.toUpperCase(), 'method'), ' ', el('code', path));
      if (op.security) title.append(' ', el('span', 'bearer', 'badge'));
      section.append(title);
      if (op.description || op.summary) section.append(el('p', op.summary || op.description));
      for (const p of op.parameters || []) {
        section.append(el('p', `${p.in} ${p.name}: ${typeName(p.schema)} ${limits(p.schema)}`, 'muted'));
      }
      const body = op.requestBody?.content?.['application/json']?.schema;
      if (body) section.append(el('p', `body: ${typeName(body)}`));
      const list = el('ul');
      for (const [status, response] of Object.entries(op.responses)) {
        const schema = response.content && Object.values(response.content)[0]?.schema;
        list.append(el('li', `${status} ${typeName(schema)} ${response.description || ''}`));
      }
      section.append(list);
      root.append(section);
    }
  }
}

async function messages() {
  const doc = await (await fetch('/api/asyncapi.json')).json();
  const root = document.getElementById('messages');
  for (const [name, message] of Object.entries(doc.components.messages)) {
    const section = el('section', undefined, 'operation');
    section.append(el('h3', `${name.startsWith('client_') ? 'client → server' : 'server → client'}: ${message.name}`));
    if (message.description) section.append(el('p', message.description));
    root.append(section);
  }
}

operations();
messages();
