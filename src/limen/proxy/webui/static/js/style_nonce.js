// xterm.js writes its character-grid rules into <style> elements. The page's policy
// (Content-Security-Policy) accepts a <style> element only when it carries this
// response's nonce: stamp it on every <style> made from now on, at creation, before the
// element is inserted (a nonce added afterwards does not count). Inline style
// attributes stay forbidden; xterm.js sets element styles through the DOM, which the
// policy allows.
const meta = document.querySelector('meta[name="limen-style-nonce"]');
const nonce = meta ? meta.content : "";
if (nonce) {
  const create = Document.prototype.createElement;
  Document.prototype.createElement = function (name, options) {
    const element = create.call(this, name, options);
    if (String(name).toLowerCase() === "style") {
      element.setAttribute("nonce", nonce);
    }
    return element;
  };
}
