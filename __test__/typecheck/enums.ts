// What the runtime objects `MatrixCodec`, `MatrixLayout` and `MatrixSource` hold.
// types.spec.ts checks the runtime against this; app.ts checks the declarations.
export const expectedEnums = {
  MatrixCodec: { Zstd: 'zstd', Zlib: 'zlib', None: 'none' },
  MatrixLayout: { RowMajor: 'row-major' },
  MatrixSource: { Memory: 'memory', Redis: 'redis', Postgres: 'postgres', Sqlite: 'sqlite', Generated: 'generated' },
} as const
