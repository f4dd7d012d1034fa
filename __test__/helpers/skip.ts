/** Titles that say why a test is skipped, so a skip in the report is never silent. */
import {
  FASHION_MNIST_ENV,
  FASHION_MNIST_PACKAGE,
  fashionMnistAvailable,
  fashionMnistDir,
} from '../../src/data/fashion-mnist.js';

/** Whether the real Fashion-MNIST files are in `dir` (or where the loader looks), and a title suffix if not. */
export function fashionMnist(dir?: string): { present: boolean; note: string } {
  const present = fashionMnistAvailable(dir);
  const note = present
    ? ''
    : ` (skipped: Debian package ${FASHION_MNIST_PACKAGE} not installed, no IDX files in ${fashionMnistDir(dir)}; ` +
      `apt-get install ${FASHION_MNIST_PACKAGE} or set ${FASHION_MNIST_ENV})`;
  return { present, note };
}
