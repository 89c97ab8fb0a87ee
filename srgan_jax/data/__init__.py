"""Data: image decoding (`images`), MATLAB-exact `imresize`, and the two training sources
(`memory_source` without TensorFlow, `tfds_source` with tf.data), chosen by `batches`."""
