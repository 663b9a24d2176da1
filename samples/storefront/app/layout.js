export const metadata = {
  title: "Storefront",
  description: "A small Next.js storefront",
};

export default function RootLayout({ children }) {
  return (
    <html lang="en">
      <body>{children}</body>
    </html>
  );
}
