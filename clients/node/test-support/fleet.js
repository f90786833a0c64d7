/**
 * A small fleet on disk for the tests: the shape of the Python tests' `BASE_MANIFEST`
 * with `fast_fleet` applied (tests/conftest.py, tests/server_support.py): two
 * repositories, two zero-latency `simulated` models, and their datasets.
 *
 * @module
 */

import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';

/**
 * The coding dataset with `cases` test cases.
 * @param {number} cases
 */
function codingTasks(cases) {
  return {
    name: 'coding-tasks',
    version: '1.0',
    defaults: { temperature: 0.1, max_tokens: 100 },
    test_cases: Array.from({ length: cases }, (_, i) => ({
      id: `code-${i}`, category: 'coding', prompt: `Write {{lang}} code #${i}`,
      variables: { lang: 'Python' }, expected: 'def', config: { max_tokens: 50 + (i % 50) },
    })),
  };
}

const REASONING_TASKS = {
  name: 'reasoning-tasks',
  version: '1.0',
  test_cases: [
    { id: 'r-1', category: 'logic', prompt: 'Is 2 > 1?', expected: 'yes' },
    { id: 'r-2', category: 'math', prompt: '2 + 2 = ?' },
  ],
};

/**
 * The manifest (as an object), before any fault is put in.
 * @param {string} fleetId
 */
export function manifest(fleetId = 'node-fleet') {
  return {
    fleet_id: fleetId,
    version: '1.0',
    repositories: [
      { repo_id: 'api-gateway', path: 'repos/api', adapter: 'native',
        scenarios: ['coding', 'reasoning'] },
      { repo_id: 'user-service', path: 'repos/user', adapter: 'native',
        scenarios: ['coding'] },
    ],
    providers: [
      { id: 'simulated:fast', params: { zero_latency: true, seed: 1 },
        pricing: { input_per_mtok: 1.0, output_per_mtok: 2.0 } },
      { id: 'simulated:slow', params: { zero_latency: true, seed: 2 } },
    ],
    scenario_profiles: {
      coding: { dataset: 'coding-tasks', concurrency: 3, settings: { temperature: 0.5 } },
      reasoning: { dataset: 'reasoning-tasks', repeat: 2 },
    },
    output: { base_dir: './out', formats: ['json', 'jsonl', 'csv'] },
  };
}

/**
 * @typedef {object} Fleet
 * @property {string} manifestPath where the manifest file is (inside the data root)
 * @property {string} manifestText its JSON text, as sent to the server
 * @property {number} planned the tests it plans
 */

/**
 * Writes a fleet into `dir`: `fleet.json` and the datasets of both repositories.
 * Per model: api-gateway codes `cases` tests and reasons 2 × 2 epochs, user-service
 * codes `cases`; two models: `4 * cases + 8` tests (32 for the default 6).
 * @param {string} dir a folder inside the server's data root
 * @param {{cases?: number, fleetId?: string, edit?: (m: any) => void}} [options]
 *   `edit` changes the manifest object before it is written (to put a fault in)
 * @returns {Promise<Fleet>}
 */
export async function writeFleet(dir, { cases = 6, fleetId = 'node-fleet', edit } = {}) {
  const datasets = {
    'repos/api/datasets/coding-tasks.json': codingTasks(cases),
    'repos/api/datasets/reasoning-tasks.json': REASONING_TASKS,
    'repos/user/datasets/coding-tasks.json': codingTasks(cases),
  };
  for (const [relative, content] of Object.entries(datasets)) {
    const file = path.join(dir, relative);
    await mkdir(path.dirname(file), { recursive: true });
    await writeFile(file, JSON.stringify(content));
  }
  const body = manifest(fleetId);
  edit?.(body);
  const manifestPath = path.join(dir, 'fleet.json');
  const manifestText = JSON.stringify(body, null, 2);
  await writeFile(manifestPath, manifestText);
  return { manifestPath, manifestText, planned: 4 * cases + 8 };
}
