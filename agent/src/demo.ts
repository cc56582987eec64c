export async function runDemo(_o: { keepLog?: string }, say: (l: string) => void): Promise<number> { say("demo: not built yet"); return 1; }
