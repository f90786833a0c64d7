/**
 * GetArtifact as a verified, resumable download to a file.
 *
 * Bytes go to a hidden temporary file beside the destination and are hashed as they
 * arrive; the file is renamed over the destination only once its size matches the
 * announced `total_size_bytes` and its SHA-256 the one the last chunk carries. A
 * broken stream is resumed at the byte offset written so far (the server's SHA-256
 * always covers the whole file, so a resumed download is checked just the same). On
 * any failure the temporary file is removed and the destination is left untouched.
 *
 * @module
 */

import { createHash, randomUUID } from 'node:crypto';
import { mkdir, open, rename, rm } from 'node:fs/promises';
import path from 'node:path';
import { FleetBenchError, fromGrpcError } from './errors.js';
import { openOrThrow } from './stream.js';

/**
 * What a finished download wrote.
 * @typedef {object} DownloadedArtifact
 * @property {string} path the destination path
 * @property {number} sizeBytes the file's size
 * @property {string} sha256 its SHA-256, lowercase hex, checked against the server's
 */

/**
 * A client-side integrity failure (gRPC's name for it: DATA_LOSS).
 * @param {string} name
 * @param {string} problem
 */
function dataLoss(name, problem) {
  return new FleetBenchError(`GetArtifact: DATA_LOSS: artifact ${name}: ${problem}`,
    { code: 'DATA_LOSS', details: problem, method: 'GetArtifact' });
}

/** One artifact being written: a temporary file, its running hash and size. */
export class ArtifactFile {
  /**
   * @param {string} name the artifact's name, for messages
   * @param {string} destPath where it goes once verified
   * @param {string} tempPath the hidden file it is written to meanwhile
   * @param {import('node:fs/promises').FileHandle} handle
   */
  constructor(name, destPath, tempPath, handle) {
    this.name = name;
    this.destPath = destPath;
    this.tempPath = tempPath;
    this.handle = handle;
    this.hash = createHash('sha256');
    /** Bytes written so far: the offset a resumed download asks for. */
    this.written = 0;
    /** The size the server announced (-1 until the first chunk). */
    this.totalSize = -1;
    /** The SHA-256 the server announced on the last chunk ('' until then). */
    this.serverSha256 = '';
  }

  /**
   * Creates the temporary file beside `destPath` (and any missing parent folders).
   * @param {string} name
   * @param {string} destPath
   * @returns {Promise<ArtifactFile>}
   */
  static async create(name, destPath) {
    const dir = path.dirname(path.resolve(destPath));
    await mkdir(dir, { recursive: true });
    const tempPath = path.join(dir, `.${path.basename(destPath)}.${randomUUID()}.part`);
    return new ArtifactFile(name, destPath, tempPath, await open(tempPath, 'wx'));
  }

  /**
   * Appends one `GetArtifactResponse` chunk; chunks must be contiguous.
   * @param {{offset: string, data: Uint8Array, total_size_bytes: string, sha256: string}} chunk
   */
  async write(chunk) {
    if (Number(chunk.offset) !== this.written) {
      throw dataLoss(this.name, `chunk at offset ${chunk.offset}, expected ${this.written}`);
    }
    await this.handle.write(chunk.data);
    this.hash.update(chunk.data);
    this.written += chunk.data.length;
    this.totalSize = Number(chunk.total_size_bytes);
    if (chunk.sha256) {
      this.serverSha256 = chunk.sha256;
    }
  }

  /**
   * Checks size and SHA-256, then moves the file into place.
   * @returns {Promise<DownloadedArtifact>}
   */
  async finish() {
    await this.handle.sync();
    await this.handle.close();
    const digest = this.hash.digest('hex');
    if (!this.serverSha256) {
      throw dataLoss(this.name, 'the stream ended without a SHA-256 to check');
    }
    if (this.written !== this.totalSize || digest !== this.serverSha256) {
      throw dataLoss(this.name, `got ${this.written} bytes with sha256 ${digest}, the server `
        + `announced ${this.totalSize} bytes with sha256 ${this.serverSha256}`);
    }
    await rename(this.tempPath, this.destPath);
    return { path: this.destPath, sizeBytes: this.written, sha256: digest };
  }

  /** Removes the temporary file (after a failure). */
  async discard() {
    await this.handle.close().catch(() => {});
    await rm(this.tempPath, { force: true });
  }
}

/**
 * Downloads one artifact, resuming at the written offset after transient failures.
 * @param {(offset: number) => import('@grpc/grpc-js').ClientReadableStream<any>} openCall
 *   starts a GetArtifact call at the given byte offset
 * @param {object} options
 * @param {string} options.name the artifact's name
 * @param {string} options.destPath the file to write
 * @param {import('./retry.js').Reconnector} options.reconnector
 * @returns {Promise<DownloadedArtifact>}
 */
export async function download(openCall, { name, destPath, reconnector }) {
  const file = await ArtifactFile.create(name, destPath);
  try {
    for (;;) {
      const call = openOrThrow(openCall, file.written, 'GetArtifact');
      call.on('error', () => {});  // errors reach the loop below
      /** @type {FleetBenchError | undefined} */
      let failure;
      try {
        for await (const chunk of call) {
          await file.write(chunk);
          if (chunk.data.length > 0) {
            reconnector.progress();
          }
        }
      } catch (error) {
        failure = fromGrpcError(error, 'GetArtifact');
      } finally {
        call.cancel();
      }
      if (!failure) {
        return await file.finish();
      }
      await reconnector.afterFailure(failure, String(file.written));
    }
  } catch (error) {
    await file.discard();
    throw error;
  }
}
