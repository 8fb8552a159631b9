/** The error every checkpoint reader and writer throws: it names the file and what was wrong. */
export class CheckpointError extends Error {
  constructor(
    readonly file: string,
    detail: string,
  ) {
    super(`${file}: ${detail}`);
    this.name = 'CheckpointError';
  }
}
