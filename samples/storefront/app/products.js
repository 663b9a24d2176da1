export const products = [
  { id: "mug", name: "Mug", cents: 1250 },
  { id: "tee", name: "T-shirt", cents: 2000 },
];

export function price(cents) {
  return `$${(cents / 100).toFixed(2)}`;
}
