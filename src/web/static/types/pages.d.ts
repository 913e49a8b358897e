// What the pages expose to the browser tests (tests/browser): plain data
// of what each page shows. Hand-written: these are the pages' own, not the
// API's (those are generated, in dispatchd.d.ts).
interface Window {
  __console?: {
    opsFrames: number;
    drivers: { id: number; lat: number; lon: number; state: string }[];
    figures: Record<string, string>;
    locate?: (id: number) => unknown;
  };
  __track?: {
    status: string | null;
    driverDistanceM: number | null;
    driverLocation: { lat: number; lon: number } | null;
    etaSeconds: number | null;
  };
}
