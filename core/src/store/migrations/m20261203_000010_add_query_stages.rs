use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// A project's query stages: plugins run on its events as they are read.
#[derive(DeriveIden)]
enum ProjectPipelines {
    Table,
    QueryStages,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(ProjectPipelines::Table)
                    .add_column(ColumnDef::new(ProjectPipelines::QueryStages).json().null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(ProjectPipelines::Table)
                    .drop_column(ProjectPipelines::QueryStages)
                    .to_owned(),
            )
            .await
    }
}
