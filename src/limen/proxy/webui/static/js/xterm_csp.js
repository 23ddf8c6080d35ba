// xterm.js under this site's Content-Security-Policy, which forbids inline styles.
//
// 1. xterm.js writes its character-grid rules into <style> elements. The policy of the
//    pages that load this module accepts a <style> element only when it carries that
//    response's nonce: stamp it on every <style> made from now on, at creation, before
//    the element is inserted (a nonce added afterwards does not count).
// 2. For 24-bit colours xterm.js's DOM renderer sets a cell's style *attribute*, which
//    the policy blocks (the colour would be lost). The same declarations set through
//    the CSS object model are allowed, so a style attribute becomes style.cssText.
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

const setAttribute = Element.prototype.setAttribute;
Element.prototype.setAttribute = function (name, value) {
  if (String(name).toLowerCase() === "style" && this instanceof HTMLElement) {
    this.style.cssText = String(value);
    return;
  }
  setAttribute.call(this, name, value);
};
