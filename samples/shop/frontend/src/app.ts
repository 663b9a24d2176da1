// Browser entry point: loads config.json, fetches /api/products and renders the list.
// All text goes through textContent (never innerHTML), so product data cannot inject markup.
import { cartBadgeText, filterProducts, formatPrice, isProductList, type Product } from "./format.js";

/** Public build-time settings written by scripts/assemble.mjs (PUBLIC_* keys of .env only). */
export interface PublicConfig {
  PUBLIC_API_BASE?: string;
  PUBLIC_API_NAME?: string;
  [key: string]: string | undefined;
}

async function loadConfig(): Promise<PublicConfig> {
  try {
    const res = await fetch("config.json", { cache: "no-store" });
    return res.ok ? ((await res.json()) as PublicConfig) : {};
  } catch {
    return {};
  }
}

/** URL of the products endpoint: same origin unless PUBLIC_API_BASE is set at build time. */
export function productsUrl(config: PublicConfig): string {
  const base = (config.PUBLIC_API_BASE ?? "").replace(/\/+$/, "");
  return `${base}/api/products`;
}

function renderProducts(doc: Document, list: HTMLElement, products: readonly Product[], onAdd: () => void): void {
  const items = products.map((p) => {
    const li = doc.createElement("li");
    li.className = "product";
    const name = doc.createElement("h2");
    name.textContent = p.name;
    const description = doc.createElement("p");
    description.textContent = p.description;
    const price = doc.createElement("span");
    price.className = "price";
    price.textContent = formatPrice(p.priceCents);
    const add = doc.createElement("button");
    add.type = "button";
    add.textContent = "Add to cart";
    add.addEventListener("click", onAdd);
    li.append(name, description, price, add);
    return li;
  });
  if (items.length === 0) {
    const empty = doc.createElement("li");
    empty.className = "empty";
    empty.textContent = "No products match your search.";
    items.push(empty);
  }
  list.replaceChildren(...items);
}

export async function start(doc: Document): Promise<void> {
  const list = doc.getElementById("products");
  const search = doc.getElementById("search") as HTMLInputElement | null;
  const badge = doc.getElementById("cart-badge");
  const status = doc.getElementById("status");
  if (!list || !search || !badge || !status) throw new Error("index.html is missing an element");

  const config = await loadConfig();
  if (config.PUBLIC_API_NAME) doc.title = `${config.PUBLIC_API_NAME} shop`;

  let cartCount = 0;
  const addToCart = () => {
    cartCount += 1;
    badge.textContent = cartBadgeText(cartCount);
  };
  badge.textContent = cartBadgeText(cartCount);

  let products: Product[] = [];
  try {
    const res = await fetch(productsUrl(config), { headers: { accept: "application/json" } });
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    const body: unknown = await res.json();
    if (!isProductList(body)) throw new Error("unexpected response");
    products = body;
    status.textContent = "";
  } catch (err) {
    status.textContent = `Could not load products (${err instanceof Error ? err.message : "error"}).`;
    return;
  }
  const render = () => renderProducts(doc, list, filterProducts(products, search.value), addToCart);
  search.addEventListener("input", render);
  render();
}

// Guard: only touch the DOM in a browser, so Node tests can import this module.
if (typeof document !== "undefined") {
  void start(document);
}
