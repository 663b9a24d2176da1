import { price, products } from "./products";

export const dynamic = "force-dynamic";

export default function Home() {
  return (
    <main>
      <h1>Storefront</h1>
      <img src="/logo.svg" alt="logo" width="40" height="40" />
      <ul>
        {products.map((p) => (
          <li key={p.id}>
            {p.name}: {price(p.cents)}
          </li>
        ))}
      </ul>
    </main>
  );
}
